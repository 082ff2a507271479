//! Creating the services' shared listeners (master-interface.md §4): UNIX sockets and FIFOs
//! with their mode (umask trick) and owner, TCP sockets per address (SO_REUSEADDR always,
//! IPV6_V6ONLY on IPv6, SO_REUSEPORT with `reuse_port = yes`); all non-blocking and
//! close-on-exec. Per-process unix listeners are not made here: each child creates its own
//! between fork and exec ([`crate::sys::process::PerPidSocket`]). A `reuse_port` inet listener
//! gets a fresh socket per process ([`bind_inet_for_child`]), so each has its own accept queue.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use crate::master_compat::services::{InetSpec, ServiceDef, UnixSpec};
use crate::sys;

/// A listener that could not be created; the message is stock's wording.
#[derive(Debug, thiserror::Error)]
#[error("service({service}): {message}")]
pub struct ListenError {
    pub service: String,
    pub message: String,
}

fn bind_unix(spec: &UnixSpec, backlog: i32) -> Result<OwnedFd, String> {
    let path = spec.path.to_string();
    let p = Path::new(&path);
    for _ in 0..3 {
        let old = sys::process::set_umask(!spec.mode & 0o777);
        let res = if spec.fifo {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(spec.mode))
                .map_err(io::Error::from)
                .and_then(|()| {
                    fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(p)
                        .map(OwnedFd::from)
                })
        } else {
            UnixListener::bind(p).map(OwnedFd::from)
        };
        sys::process::set_umask(old);
        match res {
            Ok(fd) => {
                if !spec.fifo {
                    sys::process::set_backlog(fd.as_fd(), backlog)
                        .map_err(|e| format!("listen({path}) failed: {e}"))?;
                }
                sys::set_nonblocking(fd.as_fd(), true).map_err(|e| e.to_string())?;
                if spec.uid.is_some() || spec.gid.is_some() {
                    std::os::unix::fs::chown(p, spec.uid, spec.gid)
                        .map_err(|e| format!("chown({path}) failed: {e}"))?;
                }
                return Ok(fd);
            }
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    || e.raw_os_error() == Some(libc::EEXIST) =>
            {
                if !spec.fifo {
                    match UnixStream::connect(p) {
                        Ok(_) => return Err(format!("Socket already exists: {path}")),
                        Err(c) if c.kind() != io::ErrorKind::ConnectionRefused => {
                            return Err(format!("Socket already exists: {path}"))
                        }
                        Err(_) => {}
                    }
                }
                let _ = fs::remove_file(p);
            }
            Err(e) => return Err(format!("bind({path}) failed: {e}")),
        }
    }
    Err(format!("Socket already exists: {path}"))
}

fn parse_address(a: &str) -> Result<IpAddr, String> {
    match a {
        "*" => Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        "::" | "[::]" => Ok(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("Invalid address: {other}")),
    }
}

fn bind_inet(spec: &InetSpec, backlog: i32) -> Result<OwnedFd, String> {
    use nix::sys::socket::{
        bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
    };
    let ip = parse_address(&spec.address)?;
    let failed = |e: nix::errno::Errno| {
        format!(
            "listen({}, {}) failed: {}",
            spec.address,
            spec.port,
            io::Error::from(e)
        )
    };
    let family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(failed)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(failed)?;
    if ip.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(failed)?;
    }
    if spec.reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true).map_err(failed)?;
    }
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(SocketAddr::new(ip, spec.port)),
    )
    .map_err(failed)?;
    sys::process::set_backlog(fd.as_fd(), backlog).map_err(|e| e.to_string())?;
    Ok(fd)
}

/// A process's own socket for a `reuse_port` listener (same address and port, SO_REUSEPORT).
pub fn bind_inet_for_child(spec: &InetSpec, backlog: i32) -> Result<OwnedFd, String> {
    bind_inet(spec, backlog)
}

/// Creates the master control socket `$BASE/master` (mode 0600, backlog 16).
pub fn bind_control(path: &str) -> Result<OwnedFd, String> {
    let spec = UnixSpec {
        path: crate::master_compat::config::ListenerPath::Shared(path.to_owned()),
        fifo: false,
        mode: 0o600,
        uid: None,
        gid: None,
        child_name: "master".into(),
    };
    bind_unix(&spec, 16)
}

/// Creates every shared listener of one service, in fd order (unix, fifo, inet).
pub fn bind_service(def: &ServiceDef) -> Result<Vec<OwnedFd>, ListenError> {
    let err = |message| ListenError {
        service: def.name.clone(),
        message,
    };
    let mut fds = Vec::new();
    for u in &def.unix {
        fds.push(bind_unix(u, def.backlog).map_err(err)?);
    }
    for i in &def.inet {
        fds.push(bind_inet(i, def.backlog).map_err(err)?);
    }
    Ok(fds)
}

/// Accepts and closes every queued connection (the drop path); FIFOs are skipped.
pub fn drop_queued(fds: &[&OwnedFd]) {
    for fd in fds {
        while let Ok(Some(conn)) = sys::accept_nonblocking(fd.as_fd()) {
            drop(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::master_compat::config::ListenerPath;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reuse_port_listeners_share_the_port_and_others_do_not() {
        let spec = |reuse_port| InetSpec {
            name: "imap".into(),
            address: "127.0.0.1".into(),
            port: 0,
            ssl: false,
            haproxy: false,
            reuse_port,
        };
        let first = bind_inet(&spec(true), 4).unwrap();
        let port = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrIn>(
            std::os::fd::AsRawFd::as_raw_fd(&first),
        )
        .unwrap()
        .port();
        let same = |reuse_port| InetSpec {
            port,
            ..spec(reuse_port)
        };
        let second = bind_inet_for_child(&same(true), 4).expect("SO_REUSEPORT: same port again");
        // Both accept: a connection lands in one of the two queues.
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let err = bind_inet(&same(false), 4).unwrap_err();
        assert!(err.contains("Address already in use"), "{err}");
        drop((first, second));
    }

    #[test]
    fn unix_listener_mode_and_stale_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let spec = UnixSpec {
            path: ListenerPath::Shared(path.to_string_lossy().into_owned()),
            fifo: false,
            mode: 0o666,
            uid: None,
            gid: None,
            child_name: "sock".into(),
        };
        let fd = bind_unix(&spec, 16).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        // A live socket refuses a second bind.
        assert!(bind_unix(&spec, 16)
            .unwrap_err()
            .contains("Socket already exists"));
        drop(fd);
        // A stale one (nobody listening) is replaced.
        bind_unix(&spec, 16).unwrap();
    }
}
