//! The master side of Dovecot 2.3, and what it hands to its children.
//!
//! - [`child_env`]: the environment and fd layout a service process gets from a master
//!   (master-interface.md §5), parsed once and validated.
//! - [`config`]: the dovecot.conf (2.3 syntax) loader and the typed settings the master uses.

pub mod child_env;
pub mod config;
pub mod control;
pub mod listeners;
pub mod master;
pub mod services;
pub mod supervisor;
