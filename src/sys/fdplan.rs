//! How far a reader has got: bytes written to a pipe or socket that the peer has not consumed
//! yet. The conformance replayer uses it to know that an anvil has read a write before it
//! goes on with another connection.

use std::io;
use std::os::fd::AsRawFd;

/// Bytes waiting in the kernel on `fd`'s connection that its reader has not consumed yet:
/// for a pipe (either end) the bytes in the pipe buffer (FIONREAD), for a connected unix
/// stream socket the bytes this end sent that the peer has not read (SIOCOUTQ).
pub fn unconsumed_bytes(fd: &impl AsRawFd, is_socket: bool) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    let req = if is_socket {
        libc::TIOCOUTQ
    } else {
        libc::FIONREAD
    };
    // SAFETY: the ioctl writes one c_int to the pointer we pass.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut n as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn pipe_and_socket_backlogs_drain_when_read() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let (mut r, mut w) = (std::fs::File::from(r), std::fs::File::from(w));
        w.write_all(b"abc").unwrap();
        assert_eq!(unconsumed_bytes(&w, false).unwrap(), 3);
        let mut buf = [0u8; 3];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(unconsumed_bytes(&w, false).unwrap(), 0);

        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.write_all(b"hello").unwrap();
        assert!(unconsumed_bytes(&a, true).unwrap() > 0);
        let mut buf = [0u8; 5];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(unconsumed_bytes(&a, true).unwrap(), 0);
    }
}
