//! Fuzz targets for triage-protocol: each target in `fuzz_targets/` hands
//! libFuzzer's input to one function of [`checks`], which asserts the codec's
//! invariants. The same file replays the committed corpus in the protocol
//! crate's tests (`protocol/tests/fuzz_corpus.rs`).

pub mod checks;
