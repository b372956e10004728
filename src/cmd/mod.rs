//! One module per subcommand: what it renders and how it orchestrates the
//! layers below (the attempt, the lock model, process trees).

pub(crate) mod cancel;
pub(crate) mod client;
pub(crate) mod etcd;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod status;
pub(crate) mod timeline;
pub(crate) mod watch;
