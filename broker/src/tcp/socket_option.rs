//! The one socket option the broker sets that no safe socket crate (socket2,
//! rustix, nix) exposes: `SO_RCVLOWAT`, the number of bytes a TCP socket
//! must hold before the kernel reports it readable and wakes its reader.
//! This is the only `unsafe` in the project.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

/// Sets `SO_RCVLOWAT` on `socket`. Linux wakes the reader once `bytes` are
/// buffered, at end of stream, or on an error, and lowering the mark
/// re-checks what is already buffered at once (`tcp_set_rcvlowat`).
#[cfg(target_os = "linux")]
pub fn set_recv_low_water(socket: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes.max(1)).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| io::Error::other("socklen_t cannot hold an int's size"))?;
    // SAFETY: the descriptor is a socket borrowed for the call; the option
    // value points to a live c_int and `len` is its size.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            len,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the mark is left alone: it only saves wake-ups.
#[cfg(not(target_os = "linux"))]
pub fn set_recv_low_water(_socket: &impl AsRawFd, _bytes: usize) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mark is what the kernel reports back (Linux doubles nothing here,
    /// unlike buffer sizes).
    #[cfg(target_os = "linux")]
    #[test]
    fn the_mark_is_set_on_a_tcp_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let socket =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        set_recv_low_water(&socket, 4096).expect("setsockopt");
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: reads the option into a live c_int of the given size.
        let result = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                std::ptr::from_mut(&mut value).cast::<libc::c_void>(),
                &mut len,
            )
        };
        assert_eq!(result, 0);
        assert_eq!(value, 4096);
    }
}
