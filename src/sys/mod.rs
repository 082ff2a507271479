//! The only module with `unsafe` and raw syscalls: inherited fd checks, fd placement,
//! SCM_RIGHTS, chmod, setuid.

pub mod fdplan;
