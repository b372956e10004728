//! The etcd lock backend: a lock that several hosts share, held in etcd
//! with the protocol of etcd's own concurrency Mutex, so that
//! `etcdctl lock <prefix>/<NAME>` and locksup exclude each other.
//!
//! # Protocol
//!
//! * [`Etcd::enqueue`] grants a lease of the configured TTL and, in one
//!   transaction, puts `<prefix>/<NAME>/<lease-hex>` (value: the attempt's
//!   metadata JSON) if no such key exists (create revision 0), and reads the
//!   key with the lowest create revision under `<prefix>/<NAME>/`: that key
//!   holds the lock. The lease is kept alive from the grant on.
//! * A waiter ([`Waiter::wait`]) reads the key with the greatest create
//!   revision below its own (its predecessor) and watches only that key
//!   for deletion, then looks again; when none is left, and its own key is
//!   still there, it holds the lock. The queue is FIFO and a release wakes
//!   one waiter, not all.
//! * A waiter that gives up ([`Waiter::abandon`]), or a holder that
//!   releases ([`Held::release`]), deletes its key in a transaction guarded
//!   by its create revision and revokes its lease; on an error the lease's
//!   TTL is the bound (logged, not failed).
//! * The fence ([`Held::fence`]) is the key's create revision: strictly
//!   increasing from one holder of a lock to the next.
//!
//! # Holding, and ending the attempt before the lease can lapse
//!
//! While the key waits or holds, a task on the caller's runtime sends a
//! keep-alive every `interval` on one stream; each answer confirms the lease
//! until `confirmed_until` = the request's send time + the TTL the answer
//! returned (the server renews on receipt, later than the send, so the
//! lease cannot lapse before). Times are on CLOCK_BOOTTIME
//! ([`clock::BootTime`]), which counts through a suspend. A second task
//! watches the key itself.
//!
//! [`Held::lost`] resolves (and the attempt must end at once) when
//! * an answer says the lease is gone (TTL 0): [`Lost::LeaseExpired`];
//! * the key is deleted (`etcdctl del`, [`Etcd::cancel`]):
//!   [`Lost::KeyDeleted`];
//! * `confirmed_until − margin − grace` is reached with no newer answer
//!   (a frozen member, a partition, a stuck stream): [`Lost::Unconfirmed`].
//!
//! The last is [`Held::lease_deadline`]: the supervisor's first signal goes
//! then, the final one `grace` later, and that is still `margin` before the
//! lease can lapse, so the attempt is dead before another host can be
//! given the lock. [`Held::deadline_for`] folds it into the attempt's own
//! deadline.
//!
//! # Timing ([`Timing`])
//!
//! For a TTL `T` and a grace `G`: keep-alive interval `I = T/3` (as etcd's
//! own client), margin `M = max(1s, T/5)`. Valid only when `G + M + I < T`:
//! an answer that comes on time then always moves the deadline forward
//! before it is reached; `T − G − M − I` is how late one may come. An
//! infinite grace is refused. With locksup's default grace (10s) the
//! default TTL (10s) is refused; the error names the shortest TTL that fits
//! (22s).
//!
//! # Errors and bounds
//!
//! Every unary request is bounded by `command_timeout + dial_timeout`
//! (etcdctl's defaults: 5s and 2s); connecting by `dial_timeout`. Errors
//! are one line, exit 125 ([`crate::error::Error::usage`]); when nothing
//! answers, the endpoints are probed with a TCP connect to say why
//! (refused, unreachable, or "accepts TCP: check TLS"). Keep-alive and
//! watch streams are not bounded as a whole (they live as long as the
//! lock); a keep-alive unanswered for an interval reopens the stream.
//!
//! # Names
//!
//! The lock's name in etcd is `<prefix>/<NAME>` ([`Config::lock_key`]),
//! NAME from [`config::lock_name`]. As with etcd's Mutex, a lock's queue is
//! every key under `<prefix>/<NAME>/`.

pub mod client;
pub mod clock;
pub mod config;
pub mod list;
pub mod lock;

pub use client::Etcd;
pub use clock::BootTime;
pub use config::{Config, Timing, lock_name, parse_endpoints};
pub use list::Queue;
pub use lock::{Acquired, Entry, Held, Lost, Queued, Released, Wait, Waiter};
