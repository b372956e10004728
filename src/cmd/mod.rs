//! One module per subcommand: what it renders and how it orchestrates the
//! layers below (the attempt, the lock model, process trees).

pub mod cancel;
pub mod client;
pub mod run;
pub mod serve;
pub mod status;
pub mod watch;
