//! The lock model: the lock file and its metadata ([`lockfile`], the
//! flock(2) backend), the etcd backend's core ([`etcd`]: etcd's lock
//! recipe, leases kept alive, listing; not yet wired to `run`), and what
//! the kernel says about every lock file ([`status`]: scan,
//! `/proc/locks`, states).

pub mod etcd;
pub(crate) mod lockfile;
pub(crate) mod queue;
pub(crate) mod status;
