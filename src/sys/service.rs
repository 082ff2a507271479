//! What a generic (non-anvil) service process takes from its master, socket messages with
//! an fd on their first byte, client-socket progress counters (TCP_INFO) and the capability
//! drop of the dispatcher.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicBool;

use super::{check_fd, check_status_fd, cvt, take_once, FdType, SysError};

/// The fds a master gives a plain service process (master-interface.md §5.1), owned.
#[derive(Debug)]
pub struct ServiceFds {
    /// fd 5: status pipe write end.
    pub status: OwnedFd,
    /// fd 6: master-dead pipe write end.
    pub master_dead: OwnedFd,
    /// fds 7..: listeners in slot order.
    pub listeners: Vec<OwnedFd>,
}

static SERVICE_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Validates and takes fds 5, 6 and the `socket_count` listeners from 7 on, once per process.
/// (A process takes either these or [`super::take_anvil_fds`], never both.)
pub fn take_service_fds(socket_count: u32) -> Result<ServiceFds, SysError> {
    use crate::master_compat::child_env::{
        MASTER_DEAD_FD, MASTER_LISTEN_FD_FIRST, MASTER_STATUS_FD,
    };
    check_status_fd()?;
    check_fd(MASTER_DEAD_FD, "master-dead pipe", FdType::Fifo)?;
    let last = MASTER_LISTEN_FD_FIRST + socket_count as i32;
    for fd in MASTER_LISTEN_FD_FIRST..last {
        check_fd(fd, "listener", FdType::Socket)?;
    }
    let own = take_once(&SERVICE_FDS_TAKEN)?;
    Ok(ServiceFds {
        status: own(MASTER_STATUS_FD),
        master_dead: own(MASTER_DEAD_FD),
        listeners: (MASTER_LISTEN_FD_FIRST..last).map(own).collect(),
    })
}

/// One non-blocking `recvmsg` into `buf` that also takes the first SCM_RIGHTS fd (close-on-
/// exec; extra fds are closed). `Ok((0, None))` is EOF. `WouldBlock` is returned as an error.
pub fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg_buf = [0u64; 16];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg_buf) as _;
    // SAFETY: every pointer in msg points into buffers that outlive the call.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut received: Vec<OwnedFd> = Vec::new();
    // SAFETY: walks the control buffer the kernel filled; SCM_RIGHTS fds are now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    received.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, received.into_iter().next()))
}

/// One non-blocking `sendmsg` of `bytes` (not empty) with `fd` attached to the first byte.
/// Returns how many bytes went out; the caller writes the rest without the fd.
pub fn send_with_fd(sock: BorrowedFd<'_>, bytes: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    sendmsg_with_fd(sock, bytes, fd, libc::MSG_DONTWAIT)
}

/// `sendmsg` of `bytes` (not empty) with `fd` attached to the first byte, with `MSG_NOSIGNAL`
/// and the extra `flags`. Returns how many bytes went out.
pub(super) fn sendmsg_with_fd(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fd: BorrowedFd<'_>,
    flags: libc::c_int,
) -> io::Result<usize> {
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "an fd needs a byte to ride on",
        ));
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut cmsg_buf = [0u64; 4];
    // SAFETY: as in recv_with_fd; the control buffer holds one fd.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd.as_raw_fd());
        let n = libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL | flags);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// `st_ino` of an open fd.
pub fn fd_inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(super::fstat(fd.as_raw_fd())?.st_ino)
}

/// What a TCP socket has moved so far: if two snapshots are equal, no byte was written to
/// or read from the socket by anyone between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpProgress {
    /// `tcpi_bytes_sent` (Linux >= 4.19).
    pub bytes_sent: u64,
    /// `tcpi_notsent_bytes`: written but not yet sent.
    pub notsent: u32,
    /// `tcpi_bytes_received`.
    pub bytes_received: u64,
    /// SIOCINQ: received but not yet read.
    pub unread: u32,
}

/// A [`TcpProgress`] snapshot; `Ok(None)` when `fd` is not a TCP socket or the kernel is too
/// old to report `tcpi_bytes_sent`.
pub fn tcp_progress(fd: BorrowedFd<'_>) -> io::Result<Option<TcpProgress>> {
    let mut buf = [0u8; 256];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into our buffer.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOPROTOOPT) | Some(libc::ENOTSOCK) => Ok(None),
            _ => Err(e),
        };
    }
    // Offsets in struct tcp_info (linux/tcp.h): bytes_received 128, notsent_bytes 144,
    // bytes_sent 200.
    if (len as usize) < 208 {
        return Ok(None);
    }
    let u64_at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().expect("8"));
    let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().expect("4"));
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD (= SIOCINQ) writes one int.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut unread) })?;
    Ok(Some(TcpProgress {
        bytes_sent: u64_at(200),
        notsent: u32_at(144),
        bytes_received: u64_at(128),
        unread: unread as u32,
    }))
}

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// This process's capability sets (v3 header, pid 0 = self).
fn capget() -> io::Result<(CapHeader, [CapData; 2])> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget with a v3 header writes two CapData structs we own.
    cvt(unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } as libc::c_int)?;
    Ok((hdr, data))
}

/// Removes CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from this process's effective,
/// permitted and inheritable sets (for good: they cannot come back). Root then honours file
/// modes: a socket chmod'ed to 0 refuses it with EACCES, a root-owned 0600 one still works.
pub fn drop_dac_capabilities() -> io::Result<()> {
    let (mut hdr, mut data) = capget()?;
    let mask = !((1u32 << CAP_DAC_OVERRIDE) | (1u32 << CAP_DAC_READ_SEARCH));
    data[0].effective &= mask;
    data[0].permitted &= mask;
    data[0].inheritable &= mask;
    // SAFETY: capset with a v3 header reads two CapData structs we own.
    cvt(unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } as libc::c_int)?;
    Ok(())
}

/// Whether CAP_DAC_OVERRIDE is in the effective set.
pub fn has_dac_override() -> io::Result<bool> {
    let (_, data) = capget()?;
    Ok(data[0].effective & (1 << CAP_DAC_OVERRIDE) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn bytes_with_fd_round_trip() {
        let (a, b) = UnixStream::pair().unwrap();
        let (x, _y) = UnixStream::pair().unwrap();
        let ino = fd_inode(x.as_fd()).unwrap();
        assert_eq!(send_with_fd(a.as_fd(), b"hello", x.as_fd()).unwrap(), 5);
        let mut buf = [0u8; 16];
        let (n, fd) = recv_with_fd(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fd_inode(fd.unwrap().as_fd()).unwrap(), ino);
        // Nothing more: WouldBlock; then EOF after the peer closes.
        let e = recv_with_fd(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        let (n, fd) = recv_with_fd(b.as_fd(), &mut buf).unwrap();
        assert_eq!((n, fd.is_none()), (0, true));
    }

    #[test]
    fn tcp_progress_sees_a_write_and_a_read() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let Some(p0) = tcp_progress(s.as_fd()).unwrap() else {
            return; // kernel without tcpi_bytes_sent
        };
        assert_eq!(tcp_progress(s.as_fd()).unwrap(), Some(p0));
        s.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        c.read_exact(&mut one).unwrap();
        let p1 = tcp_progress(s.as_fd()).unwrap().unwrap();
        assert_ne!(p1, p0);
        c.write_all(b"y").unwrap();
        crate::stock::wait_for(std::time::Duration::from_secs(5), || {
            (tcp_progress(s.as_fd()).unwrap().unwrap().unread == 1).then_some(())
        })
        .unwrap();
        let p2 = tcp_progress(s.as_fd()).unwrap().unwrap();
        s.read_exact(&mut one).unwrap();
        assert_ne!(tcp_progress(s.as_fd()).unwrap().unwrap(), p2);
        // A unix socket has no TCP_INFO.
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(tcp_progress(a.as_fd()).unwrap(), None);
    }
}
