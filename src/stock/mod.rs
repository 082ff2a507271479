//! Runs a stock Dovecot 2.3 instance in a temporary directory, on 127.0.0.1 high ports, for
//! live tests, benchmarks and the conformance recorder.
