//! The library side of `triagectl`, the admin CLI: [`client`] speaks the
//! broker's HTTP admin API and turns its replies into [`client::CtlError`]s an
//! admin can act on; [`cluster`] finds the brokers
//! through lookupd and sums their stats; [`table`] renders `/stats` for people; [`tail`]
//! subscribes over TCP and prints what arrives. The binary
//! (`src/bin/triagectl.rs`) parses arguments and decides exit codes.

pub mod client;
pub mod cluster;
pub mod table;
pub mod tail;
