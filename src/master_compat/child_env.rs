//! What a Dovecot 2.3 master gives a service process: fixed fds and environment variables
//! (master-interface.md §5.1–§5.2, anvil-protocol.md §1.2).

/// fd 3: shared children -> anvil pipe (write end), for non-anvil services.
pub const MASTER_ANVIL_FD: i32 = 3;
/// fd 4 of anvil: socketpair end over which the master passes a new log fd.
pub const MASTER_ANVIL_LOG_FDPASS_FD: i32 = 4;
/// fd 5: status pipe write end.
pub const MASTER_STATUS_FD: i32 = 5;
/// fd 6: master-dead pipe write end (error/hang-up = master gone).
pub const MASTER_DEAD_FD: i32 = 6;
/// fd 7: first listener.
pub const MASTER_LISTEN_FD_FIRST: i32 = 7;
