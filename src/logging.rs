//! Logging: Dovecot's internal log format on fd 2 when running under a master
//! (`LOG_SERVICE=1`), plain `<prefix><Level>: <text>` lines on stderr otherwise.
