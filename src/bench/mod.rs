//! `foreman bench …`: benchmarks run side by side with stock Dovecot in one run.

pub mod master;
