//! The lock model: the lock file and its metadata ([`lockfile`], the
//! flock(2) backend) and what the kernel says about every lock file
//! ([`status`]: scan, `/proc/locks`, states).

pub(crate) mod lockfile;
pub(crate) mod status;
