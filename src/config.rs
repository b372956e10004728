//! Configuration file (TOML): lookup, `[run]` defaults, `[[policy]]`
//! overrides, `[status]` roots. PLACEHOLDER — being written.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::duration::Dur;
use crate::error::Result;
use crate::signal::Sig;

/// Values a `[run]` table or a `[[policy]]` entry may set; all optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunDefaults {
    /// How long the attempt may hold the lock.
    pub timeout: Option<Dur>,
    /// Wait between first and final signal.
    pub grace: Option<Dur>,
    /// How long to wait for the lock.
    pub wait: Option<Dur>,
    /// First signal.
    pub signal: Option<Sig>,
    /// Final signal.
    pub final_signal: Option<Sig>,
    /// Mode of a newly created lock file.
    pub file_mode: Option<u32>,
    /// Exit code when the lock is not obtained.
    pub conflict_exit_code: Option<i32>,
}

/// A loaded configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `[run]`.
    pub run: RunDefaults,
    /// Where it was read from, if anywhere.
    pub path: Option<PathBuf>,
}

impl Config {
    /// Find and load the configuration.
    pub fn load(_explicit: Option<&Path>) -> Result<Config> {
        Ok(Config::default())
    }

    /// `[run]` overlaid with the first `[[policy]]` matching `subject`.
    pub fn defaults_for(&self, _subject: &Path) -> RunDefaults {
        self.run.clone()
    }
}
