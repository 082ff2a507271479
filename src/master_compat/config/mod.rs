//! dovecot.conf (2.3 syntax) loader: grammar -> raw tree with positions -> typed settings.
//! (Issue 4.)
