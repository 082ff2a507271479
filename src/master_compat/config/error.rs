//! Errors and warnings of the loader, formatted exactly as doveconf prints them (after the
//! `doveconf: Fatal: ` / `doveconf: Warning: ` prefix).

use std::fmt;

use super::raw::Pos;

/// Where an error belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A line: `Error in configuration file FILE line N: MSG`.
    Line(Pos),
    /// A whole file (settings checks, missing `}`): `Error in configuration file FILE: MSG`.
    File(String),
    /// No file context (the main file cannot be opened): `MSG`.
    None,
}

/// One configuration error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub place: Place,
    pub message: String,
    /// A settings-check error (doveconf prints it as `Error: MSG` and then as the fatal line,
    /// and still prints the configuration).
    pub check: bool,
}

impl ConfigError {
    pub fn at(pos: &Pos, message: impl Into<String>) -> Self {
        ConfigError {
            place: Place::Line(pos.clone()),
            message: message.into(),
            check: false,
        }
    }
    pub fn in_file(file: &str, message: impl Into<String>) -> Self {
        ConfigError {
            place: Place::File(file.to_owned()),
            message: message.into(),
            check: false,
        }
    }
    pub fn check(file: &str, message: impl Into<String>) -> Self {
        ConfigError {
            place: Place::File(file.to_owned()),
            message: message.into(),
            check: true,
        }
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        ConfigError {
            place: Place::None,
            message: message.into(),
            check: false,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.place {
            Place::Line(pos) => {
                write!(
                    f,
                    "Error in configuration file {} line {}: {}",
                    pos.file, pos.line, self.message
                )
            }
            Place::File(file) => write!(f, "Error in configuration file {file}: {}", self.message),
            Place::None => f.write_str(&self.message),
        }
    }
}

/// A warning (the config is still usable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub text: String,
    /// How many errors came before it in reading order (doveconf stops at the first error, so
    /// it prints only the warnings with 0 here).
    pub errors_before: usize,
}

impl Warning {
    pub fn at(pos: &Pos, message: impl Into<String>) -> Self {
        Warning {
            text: format!(
                "Configuration file {} line {}: {}",
                pos.file,
                pos.line,
                message.into()
            ),
            errors_before: 0,
        }
    }
    pub fn plain(text: impl Into<String>) -> Self {
        Warning {
            text: text.into(),
            errors_before: 0,
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
