//! The fork/exec boundary: the only module with `unsafe`.
//!
//! [`Prepared`] builds, before the fork, everything the attempt's first
//! process needs (paths, argv, envp, the execve candidates of a `PATH`
//! search), so that the child, between `fork` and `execve`, makes only
//! async-signal-safe system calls and allocates nothing:
//!
//! 1. own process group (unless `--foreground`); `PR_SET_PDEATHSIG` =
//!    SIGKILL, then the `getppid` race check; every signal back to the
//!    disposition locksup inherited, mask emptied until the exec;
//! 2. open the lock file (`O_NOFOLLOW`, `O_CLOEXEC`; regular files only);
//!    with `--order fifo`, wait for the attempt's turn in the lock's queue
//!    ([`crate::lock::queue`]): behind another waiter, block in `flock(2)`
//!    on its ticket until the kernel grants it (the waiter left the queue,
//!    or died: then report that and wait for the supervisor's word, like
//!    an attempt queued for the etcd lock);
//! 3. `flock(2)`; if busy, report `waiting` and block (or report `busy`
//!    and leave, without waiting);
//! 4. check that the path still names the file locked (it may have been
//!    removed or replaced meanwhile: then let go and start again at 2);
//! 5. report `locked`; give the ticket back (remove its name, unlock it),
//!    which wakes the next waiter's first process, so it asks the kernel
//!    while this attempt holds the lock; then block until the supervisor,
//!    having written the metadata line, sends the go-ahead with the
//!    variables only known now (`LOCKSUP_DEADLINE`, `LOCKSUP_FENCE`,
//!    `LOCKSUP_PREVIOUS_*`), or `r`: the path names another file now,
//!    start again at 2;
//! 6. restore the inherited signal mask, move the lock descriptor to the
//!    number promised in `LOCKSUP_LOCK_FD`, inheritable, and exec the
//!    command.
//!
//! Reports travel on a close-on-exec pipe as fixed-size binary records, so
//! its end of file after `locked` means the command was exec'd. The
//! supervisor enforces `--wait` by killing the child, so the blocking
//! `flock` never delays the supervisor.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::signal::Signal;

use crate::sys::cstring;

/// Size of one report record: tag, then two little-endian u64.
pub const RECORD_LEN: usize = 17;
/// Size of the go-ahead's block of late variables: `KEY=VALUE` entries,
/// each ended by a NUL, then NULs. One write of the whole message is
/// atomic on a pipe (at most `PIPE_BUF`).
pub const LATE_LEN: usize = 2048;
/// At most this many late variables.
const MAX_LATE: usize = 8;
/// The go-ahead's tag; `RETRY` and `TURN` are the supervisor's other words.
const GO: u8 = b'g';
/// Enough digits for any PID (`pid_max` is at most 2^22).
const PID_DIGITS: usize = 10;

/// A report from the attempt's first process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// The lock is busy; now blocking for it. `(st_dev, st_ino)`.
    Waiting(u64, u64),
    /// The lock is busy and we may not wait; the child exits.
    Busy(u64, u64),
    /// The lock is held.
    Locked(u64, u64),
    /// The lock is held on a lock file this process created.
    LockedNew(u64, u64),
    /// The predecessor in the queue died waiting (its ticket's lock was
    /// granted with the name still there); now waiting for a word.
    PredecessorDied,
    /// Something failed before exec: the stage and the errno (or mode).
    Failed(Stage, u64),
}

/// Where the child failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// prctl and friends.
    Setup,
    /// open(2) of the lock file; value is errno.
    Open,
    /// The lock path is not a regular file; value is `st_mode`.
    NotRegular,
    /// flock(2); value is errno.
    Flock,
    /// The lock file has more than one name; value is `st_nlink`.
    HardLinks,
    /// execve(2) of every candidate; value is errno.
    Exec,
}

impl Record {
    fn encode(self) -> [u8; RECORD_LEN] {
        let (tag, a, b) = match self {
            Record::Waiting(d, i) => (b'W', d, i),
            Record::Busy(d, i) => (b'B', d, i),
            Record::Locked(d, i) => (b'L', d, i),
            Record::LockedNew(d, i) => (b'N', d, i),
            Record::PredecessorDied => (b'P', 0, 0),
            Record::Failed(s, v) => {
                let s = match s {
                    Stage::Setup => 1,
                    Stage::Open => 2,
                    Stage::NotRegular => 3,
                    Stage::Flock => 4,
                    Stage::Exec => 5,
                    Stage::HardLinks => 6,
                };
                (b'E', s, v)
            }
        };
        let mut out = [0u8; RECORD_LEN];
        out[0] = tag;
        out[1..9].copy_from_slice(&a.to_le_bytes());
        out[9..17].copy_from_slice(&b.to_le_bytes());
        out
    }

    /// Decode one record; `None` for garbage.
    pub fn decode(buf: &[u8; RECORD_LEN]) -> Option<Record> {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&buf[1..9]);
        b.copy_from_slice(&buf[9..17]);
        let (a, b) = (u64::from_le_bytes(a), u64::from_le_bytes(b));
        Some(match buf[0] {
            b'W' => Record::Waiting(a, b),
            b'B' => Record::Busy(a, b),
            b'L' => Record::Locked(a, b),
            b'N' => Record::LockedNew(a, b),
            b'P' => Record::PredecessorDied,
            b'E' => Record::Failed(
                match a {
                    1 => Stage::Setup,
                    2 => Stage::Open,
                    3 => Stage::NotRegular,
                    4 => Stage::Flock,
                    5 => Stage::Exec,
                    6 => Stage::HardLinks,
                    _ => return None,
                },
                b,
            ),
            _ => return None,
        })
    }
}

/// Everything the child needs, built before the fork.
pub(crate) struct Prepared {
    /// The directory that holds the lock file, resolved by
    /// [`crate::lock::lockfile::open_parent`], and the file's name in it.
    lock_dir: OwnedFd,
    lock_name: CString,
    mode: libc::mode_t,
    flock_op: libc::c_int,
    nonblock: bool,
    /// execve candidates, in `PATH` order.
    candidates: Vec<CString>,
    /// Owns the strings `argv_ptrs` points to.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    /// NUL-terminated `KEY=VALUE` entries; owned mutably so the child can
    /// fill in the PID slot of its copy.
    envp: Vec<Vec<u8>>,
    /// Pointers to `envp`'s entries, then `MAX_LATE + 1` nulls: the child
    /// points the first of them at the late variables.
    envp_ptrs: Vec<*const libc::c_char>,
    /// Index in `envp_ptrs` of the first slot for late variables.
    late_slot: usize,
    /// Where the child's copy keeps the late variables' text.
    late: Vec<u8>,
    /// Wait for the supervisor's word (`TURN`) before taking the lock.
    queued: bool,
    /// The ticket: given back (retired or removed, then unlocked) as soon
    /// as the lock is held.
    ticket: Option<ChildTicket>,
    /// The predecessor's ticket, its name and its retired name, to wait
    /// for in `flock(2)` before asking (in the ticket's directory).
    predecessor: Option<(RawFd, CString, CString)>,
    /// Index in `envp` and key length of the variable that gets the
    /// child's PID, with room for the digits.
    pid_slot: Option<(usize, usize)>,
    /// A descriptor reserved for the lock: the child puts the lock on
    /// this number, which `LOCKSUP_LOCK_FD` names.
    lock_fd_slot: OwnedFd,
    /// Every signal with the disposition the command gets: ignored if it
    /// was ignored when locksup started, the default action otherwise.
    dispositions: Vec<(libc::c_int, libc::sighandler_t)>,
    /// The signal mask locksup started with, restored just before exec.
    mask: libc::sigset_t,
    /// Stay in locksup's process group (`--foreground`).
    foreground: bool,
}

/// What the caller gives [`Prepared::new`].
pub(crate) struct Request<'a> {
    /// The directory that holds the lock file (see
    /// [`crate::lock::lockfile::open_parent`]).
    pub lock_dir: OwnedFd,
    /// The lock file's name in `lock_dir`.
    pub lock_name: &'a OsStr,
    /// Mode for a lock file the child creates.
    pub mode: u32,
    /// Shared lock.
    pub shared: bool,
    /// Do not wait for a busy lock.
    pub nonblock: bool,
    /// Command and arguments (non-empty).
    pub command: &'a [OsString],
    /// Extra environment (set, overriding); the rest is inherited.
    pub env: Vec<(OsString, OsString)>,
    /// Variables removed from the inherited environment.
    pub env_remove: Vec<&'a str>,
    /// Wait for the supervisor's word that it is the attempt's turn
    /// before taking the lock (`--order fifo` behind a waiter the
    /// supervisor waits for, or the etcd lock).
    pub queued: bool,
    /// The attempt's ticket in the lock's queue (`--order fifo`), which
    /// the first process gives back once it holds the lock.
    pub ticket: Option<QueueTicket<'a>>,
    /// The ticket of the waiter before it (with its name and its retired
    /// name), which the first process waits for itself.
    pub predecessor: Option<(BorrowedFd<'a>, &'a str, &'a str)>,
    /// A variable the child sets to its own PID (`WATCHDOG_PID`).
    pub pid_var: Option<&'a str>,
    /// Stay in locksup's process group, so the command can use the
    /// terminal (`--foreground`).
    pub foreground: bool,
}

/// A ticket in a lock's queue, as the first process sees it.
pub(crate) struct QueueTicket<'a> {
    /// The queue directory.
    pub dir: BorrowedFd<'a>,
    /// The ticket's name in it.
    pub name: &'a str,
    /// The ticket, locked.
    pub fd: BorrowedFd<'a>,
    /// The name to give it back as (else it is removed).
    pub retired: &'a str,
    /// The spare name for the predecessor's retired ticket, once granted
    /// (else it is removed).
    pub recycle_as: Option<&'a OsStr>,
}

/// [`QueueTicket`], ready for the child.
struct ChildTicket {
    dir: RawFd,
    name: CString,
    fd: RawFd,
    retired: CString,
    recycle_as: Option<CString>,
}

impl Prepared {
    /// Build the child's plan.
    pub(crate) fn new(req: Request<'_>) -> io::Result<Prepared> {
        let lock_name = cstring(req.lock_name.as_bytes(), "lock file name")?;
        let ticket = match req.ticket {
            Some(t) => Some(ChildTicket {
                dir: t.dir.as_raw_fd(),
                name: cstring(t.name.as_bytes(), "ticket name")?,
                fd: t.fd.as_raw_fd(),
                retired: cstring(t.retired.as_bytes(), "ticket name")?,
                recycle_as: match t.recycle_as {
                    Some(n) => Some(cstring(n.as_bytes(), "spare name")?),
                    None => None,
                },
            }),
            None => None,
        };
        let predecessor = match req.predecessor {
            Some((fd, name, retired)) => Some((
                fd.as_raw_fd(),
                cstring(name.as_bytes(), "ticket name")?,
                cstring(retired.as_bytes(), "ticket name")?,
            )),
            None => None,
        };
        let argv: Vec<CString> = req
            .command
            .iter()
            .map(|a| cstring(a.as_bytes(), "an argument"))
            .collect::<io::Result<_>>()?;
        let name = req
            .command
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command"))?;
        let path_var = req
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var_os("PATH"));
        let candidates = exec_candidates(name, path_var.as_deref())?;

        // Reserve a descriptor number for the lock: a close-on-exec
        // /dev/null that the child replaces with the lock (dup3).
        let lock_fd_slot: OwnedFd = std::fs::File::open("/dev/null")?.into();
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| {
                !req.env_remove.iter().any(|r| k == r)
                    && !req.env.iter().any(|(e, _)| e == k)
                    && k != "LOCKSUP_LOCK_FD"
                    && !LATE_VARIABLES.iter().any(|v| k == v)
            })
            .collect();
        env.extend(req.env);
        env.push((
            "LOCKSUP_LOCK_FD".into(),
            lock_fd_slot.as_raw_fd().to_string().into(),
        ));
        let mut envp: Vec<Vec<u8>> = env
            .iter()
            .map(|(k, v)| {
                let mut e = Vec::with_capacity(k.len() + v.len() + 2);
                e.extend_from_slice(k.as_bytes());
                e.push(b'=');
                e.extend_from_slice(v.as_bytes());
                e.push(0);
                e
            })
            .filter(|e| !e[..e.len() - 1].contains(&0))
            .collect();
        let pid_slot = req.pid_var.map(|var| {
            let mut e = var.as_bytes().to_vec();
            e.push(b'=');
            let key_len = e.len();
            e.extend_from_slice(&[0u8; PID_DIGITS + 1]);
            envp.push(e);
            (envp.len() - 1, key_len)
        });
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const libc::c_char> =
            envp.iter().map(|e| e.as_ptr().cast()).collect();
        let late_slot = envp_ptrs.len();
        envp_ptrs.extend([std::ptr::null(); MAX_LATE + 1]);
        Ok(Prepared {
            lock_dir: req.lock_dir,
            lock_name,
            mode: req.mode as libc::mode_t,
            flock_op: if req.shared {
                libc::LOCK_SH
            } else {
                libc::LOCK_EX
            },
            nonblock: req.nonblock,
            candidates,
            _argv: argv,
            argv_ptrs,
            envp,
            envp_ptrs,
            late_slot,
            late: vec![0; LATE_LEN],
            queued: req.queued,
            ticket,
            predecessor,
            pid_slot,
            lock_fd_slot,
            dispositions: inherited_dispositions(),
            mask: crate::sys::inherited().mask(),
            foreground: req.foreground,
        })
    }
}

/// What the command gets for every signal that has a disposition: what
/// locksup inherited (ignored, or the default action). Handlers locksup
/// installed for itself, and the runtime's ignoring of SIGPIPE, end here.
fn inherited_dispositions() -> Vec<(libc::c_int, libc::sighandler_t)> {
    let inherited = crate::sys::inherited();
    (1..=crate::sys::MAX_SIGNAL)
        .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP)
        .map(|s| {
            let action = if inherited.ignored(s) {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            };
            (s, action)
        })
        .collect()
}

/// The paths `execvp` would try for `name`, in order.
fn exec_candidates(name: &OsStr, path: Option<&OsStr>) -> io::Result<Vec<CString>> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Ok(vec![cstring(b"", "command")?]);
    }
    if bytes.contains(&b'/') {
        return Ok(vec![cstring(bytes, "command")?]);
    }
    let path = path.map_or(&b"/usr/local/bin:/usr/bin:/bin"[..], |p| p.as_bytes());
    path.split(|b| *b == b':')
        .map(|dir| {
            let mut full = if dir.is_empty() {
                b".".to_vec()
            } else {
                dir.to_vec()
            };
            full.push(b'/');
            full.extend_from_slice(bytes);
            cstring(&full, "command path")
        })
        .collect()
}

/// The running child: its PID and the supervisor's ends of the pipes.
pub(crate) struct Spawned {
    /// PID (and process group) of the attempt's first process.
    pub pid: i32,
    /// Reports from the child ([`Record`]s), end of file at exec.
    pub status: OwnedFd,
    /// Where the go-ahead goes ([`go_ahead`]).
    pub control: OwnedFd,
}

/// What the supervisor sends instead of the go-ahead when the lock file's
/// path names another file than the one locked: let go and start again.
pub(crate) const RETRY: &[u8] = b"r";

/// What the supervisor sends a queued child when it is its turn to take
/// the lock.
pub(crate) const TURN: &[u8] = b"t";

/// [`TURN`], after the supervisor gave the ticket back itself (the queue
/// could not be read): the child must not touch it any more.
pub(crate) const TURN_WITHOUT_TICKET: &[u8] = b"T";

/// Variables the command gets only from the go-ahead (an inherited value
/// would be another attempt's).
pub(crate) const LATE_VARIABLES: [&str; 6] = [
    "LOCKSUP_DEADLINE",
    "LOCKSUP_FENCE",
    "LOCKSUP_PREVIOUS_OUTCOME",
    "LOCKSUP_PREVIOUS_ATTEMPT_ID",
    "LOCKSUP_PREVIOUS_FENCE",
    "LOCKSUP_PREVIOUS_EXIT_CODE",
];

/// The go-ahead message: `g`, then a block of `LATE_LEN` bytes with the
/// late variables (`KEY=VALUE`, each ended by a NUL). A variable that does
/// not fit (or holds a NUL) is left out and returned.
pub fn go_ahead(vars: &[(&str, String)]) -> (Vec<u8>, Vec<String>) {
    let mut msg = Vec::with_capacity(1 + LATE_LEN);
    msg.push(GO);
    let mut left_out = Vec::new();
    let mut count = 0;
    for (k, v) in vars {
        let entry_len = k.len() + 1 + v.len() + 1;
        // The block always ends with a NUL after the last entry.
        if count == MAX_LATE
            || v.contains('\0')
            || k.contains('\0')
            || msg.len() - 1 + entry_len >= LATE_LEN
        {
            left_out.push((*k).to_owned());
            continue;
        }
        msg.extend_from_slice(k.as_bytes());
        msg.push(b'=');
        msg.extend_from_slice(v.as_bytes());
        msg.push(0);
        count += 1;
    }
    msg.resize(1 + LATE_LEN, 0);
    (msg, left_out)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Fork the attempt's first process (see the module documentation).
///
/// Call it from a thread that lives as long as the attempt (the
/// parent-death signal fires when the *forking thread* exits), in a
/// process with no other threads: the main thread of a current-thread
/// runtime.
pub(crate) fn spawn(prep: &mut Prepared) -> io::Result<Spawned> {
    let (status_r, status_w) = pipe()?;
    let (control_r, control_w) = pipe()?;
    let parent = nix::unistd::getpid().as_raw();
    let late = Late {
        text: prep.late.as_mut_ptr(),
        // SAFETY: `late_slot + MAX_LATE` is within `envp_ptrs` (built so).
        slots: unsafe { prep.envp_ptrs.as_mut_ptr().add(prep.late_slot) },
    };
    let pid_ptr: *mut u8 = match prep.pid_slot {
        Some((i, key)) => prep.envp[i][key..].as_mut_ptr(),
        None => std::ptr::null_mut(),
    };
    // Block every signal across the fork, so no handler of ours runs in
    // the child before it has reset them.
    let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises `all`; pthread_sigmask writes the old
    // mask into `old`, valid storage of the right type.
    unsafe {
        libc::sigfillset(all.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_SETMASK, all.as_ptr(), old.as_mut_ptr());
    }
    // SAFETY: the caller guarantees this process has a single thread, so
    // the child is a consistent copy. The child runs only `child_main`,
    // which makes async-signal-safe system calls on memory prepared above
    // and never returns (it execs or calls _exit).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: we are the child of a fork; see `child_main`.
        unsafe {
            child_main(
                prep,
                parent,
                status_w.as_raw_fd(),
                control_r.as_raw_fd(),
                [status_r.as_raw_fd(), control_w.as_raw_fd()],
                late,
                pid_ptr,
            )
        }
    }
    let fork_err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above (initialised by the call).
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, old.as_ptr(), std::ptr::null_mut());
    }
    if pid < 0 {
        return Err(fork_err);
    }
    // Also from this side, so signals to the group work at once.
    if !prep.foreground {
        let _ = nix::unistd::setpgid(
            nix::unistd::Pid::from_raw(pid),
            nix::unistd::Pid::from_raw(pid),
        );
    }
    drop((status_w, control_r));
    Ok(Spawned {
        pid,
        status: status_r,
        control: control_w,
    })
}

/// Where the child puts the late variables of the go-ahead.
struct Late {
    /// `LATE_LEN` bytes for their text.
    text: *mut u8,
    /// `MAX_LATE + 1` null slots at the end of the environment's pointers.
    slots: *mut *const libc::c_char,
}

/// The child between fork and exec.
///
/// # Safety
///
/// Only in the child of `fork`, with the pointers of `prep` valid (the
/// child's copy of the parent's memory). Uses only async-signal-safe
/// calls: setpgid, prctl, getppid, sigaction, pthread_sigmask, open,
/// fstat, fstatat, fchmod, fcntl, flock, renameat, renameat2, unlinkat,
/// write, read, dup3, close, execve, _exit.
unsafe fn child_main(
    prep: &Prepared,
    parent: libc::pid_t,
    status: RawFd,
    control: RawFd,
    parent_ends: [RawFd; 2],
    late: Late,
    pid_digits: *mut u8,
) -> ! {
    // SAFETY: (the whole body) see the function's contract. Every pointer
    // passed to the kernel points into `prep` or the stack.
    unsafe {
        for fd in parent_ends {
            libc::close(fd);
        }
        let report = |r: Record| {
            let buf = r.encode();
            libc::write(status, buf.as_ptr().cast(), RECORD_LEN);
        };
        let fail = |stage: Stage, value: u64, code: i32| -> ! {
            report(Record::Failed(stage, value));
            libc::_exit(code)
        };
        let errno = || *libc::__errno_location() as u64;
        if !prep.foreground {
            libc::setpgid(0, 0);
        }
        if !pid_digits.is_null() {
            // Decimal digits of our PID, then the NUL that ends the entry.
            let mut n = libc::getpid() as u32;
            let mut tmp = [0u8; PID_DIGITS];
            let mut len = 0;
            loop {
                tmp[len] = b'0' + (n % 10) as u8;
                len += 1;
                n /= 10;
                if n == 0 || len == PID_DIGITS {
                    break;
                }
            }
            for i in 0..len {
                *pid_digits.add(i) = tmp[len - 1 - i];
            }
            *pid_digits.add(len) = 0;
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(Stage::Setup, errno(), crate::exit::FAILURE);
        }
        // The supervisor may have died before prctl: then no death signal
        // will ever come.
        if libc::getppid() != parent {
            libc::_exit(crate::exit::FAILURE);
        }
        // Numbers the C library reserves fail with EINVAL: left alone.
        let mut act: libc::sigaction = std::mem::zeroed();
        for &(sig, handler) in &prep.dispositions {
            act.sa_sigaction = handler;
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

        let base =
            libc::O_RDWR | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
        let dir = prep.lock_dir.as_raw_fd();
        let want = 1 + LATE_LEN;
        let mut buf = [0u8; 1 + LATE_LEN];
        let mut turn_pending = prep.queued;
        let mut predecessor = prep.predecessor.as_ref();
        let mut ticket = prep.ticket.as_ref();
        // Until the lock is held on the file the path names: a lock file
        // removed or replaced while we waited (or before the supervisor
        // wrote its metadata, which it then says with `r`) is let go, and
        // the file the path names now is locked instead.
        let fd = loop {
            let mut fd = libc::openat(
                dir,
                prep.lock_name.as_ptr(),
                base | libc::O_CREAT | libc::O_EXCL,
                prep.mode,
            );
            let created = fd >= 0;
            if fd < 0 && *libc::__errno_location() == libc::EEXIST {
                fd = libc::openat(dir, prep.lock_name.as_ptr(), base);
            }
            if fd < 0 {
                fail(Stage::Open, errno(), crate::exit::FAILURE);
            }
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) != 0 {
                fail(Stage::Open, errno(), crate::exit::FAILURE);
            }
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                fail(
                    Stage::NotRegular,
                    u64::from(st.st_mode),
                    crate::exit::FAILURE,
                );
            }
            // A second name for some other file: the metadata would overwrite it.
            if st.st_nlink > 1 {
                fail(Stage::HardLinks, st.st_nlink, crate::exit::FAILURE);
            }
            if created {
                // The umask may have narrowed it; the configured mode is wanted.
                libc::fchmod(fd, prep.mode);
            }
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            let (dev, ino) = (st.st_dev, st.st_ino);
            if let Some((pred, pred_name, pred_retired)) = predecessor.take() {
                // (Never without the ticket; a directory of -1 would only
                // make the name's check fail: taken for a death, safely.)
                let dir = ticket.map_or(-1, |t| t.dir);
                // Behind another waiter: the kernel grants its ticket's
                // lock when it leaves the queue (its name went first:
                // nobody else was before it, so it is our turn) or dies
                // (the name is still there: the supervisor finds our place
                // again and says when it is our turn).
                let granted = loop {
                    if libc::flock(*pred, libc::LOCK_EX) == 0 {
                        break true;
                    }
                    if *libc::__errno_location() != libc::EINTR {
                        break false;
                    }
                };
                let mut st: libc::stat = std::mem::zeroed();
                let mut now: libc::stat = std::mem::zeroed();
                let left = granted
                    && libc::fstat(*pred, &mut st) == 0
                    && (st.st_nlink == 0
                        || libc::fstatat(
                            dir,
                            pred_name.as_ptr(),
                            &mut now,
                            libc::AT_SYMLINK_NOFOLLOW,
                        ) != 0
                        || now.st_dev != st.st_dev
                        || now.st_ino != st.st_ino);
                if !left {
                    report(Record::PredecessorDied);
                    turn_pending = true;
                } else if libc::fstatat(
                    dir,
                    pred_retired.as_ptr(),
                    &mut now,
                    libc::AT_SYMLINK_NOFOLLOW,
                ) == 0
                    && now.st_dev == st.st_dev
                    && now.st_ino == st.st_ino
                {
                    // Its retired ticket, granted to us, so nobody else
                    // waits for it: a spare from now on (taken once we let
                    // go at the exec), or removed.
                    let spared = ticket
                        .and_then(|t| t.recycle_as.as_ref())
                        .is_some_and(|spare| {
                            libc::renameat2(
                                dir,
                                pred_retired.as_ptr(),
                                dir,
                                spare.as_ptr(),
                                libc::RENAME_NOREPLACE,
                            ) == 0
                        });
                    if !spared {
                        libc::unlinkat(dir, pred_retired.as_ptr(), 0);
                    }
                }
            }
            if turn_pending {
                // Our turn in the lock's queue (the file is open already, so
                // the lock is asked for at once); anything else (the end of
                // the pipe: the supervisor gave up or died) ends us.
                let mut word = [0u8; 1];
                loop {
                    let n = libc::read(control, word.as_mut_ptr().cast(), 1);
                    if n == 1 && word[0] == TURN[0] {
                        break;
                    }
                    if n == 1 && word[0] == TURN_WITHOUT_TICKET[0] {
                        ticket = None;
                        break;
                    }
                    if n == 1 || n == 0 || *libc::__errno_location() != libc::EINTR {
                        libc::_exit(crate::exit::FAILURE);
                    }
                }
                turn_pending = false;
            }

            if libc::flock(fd, prep.flock_op | libc::LOCK_NB) != 0 {
                if *libc::__errno_location() != libc::EWOULDBLOCK {
                    fail(Stage::Flock, errno(), crate::exit::FAILURE);
                }
                if prep.nonblock {
                    report(Record::Busy(dev, ino));
                    libc::_exit(crate::exit::CONFLICT);
                }
                report(Record::Waiting(dev, ino));
                while libc::flock(fd, prep.flock_op) != 0 {
                    if *libc::__errno_location() != libc::EINTR {
                        fail(Stage::Flock, errno(), crate::exit::FAILURE);
                    }
                }
            }
            let mut now: libc::stat = std::mem::zeroed();
            let named = libc::fstatat(
                dir,
                prep.lock_name.as_ptr(),
                &mut now,
                libc::AT_SYMLINK_NOFOLLOW,
            ) == 0
                && now.st_dev == dev
                && now.st_ino == ino;
            if !named {
                libc::close(fd);
                continue;
            }
            report(if created {
                Record::LockedNew(dev, ino)
            } else {
                Record::Locked(dev, ino)
            });
            if let Some(t) = ticket.take() {
                // Out of the queue (after the report, which the supervisor
                // needs first): the name first, so the successor, woken by
                // the unlock, sees that we left rather than died. Retired,
                // for the successor to make a spare of, over what an
                // earlier holder of this number retired if its successor
                // never took it (no one can be waiting for that one: a
                // number is given again only once no ticket above it is
                // left); else removed.
                let retired =
                    libc::renameat(t.dir, t.name.as_ptr(), t.dir, t.retired.as_ptr()) == 0;
                if !retired {
                    libc::unlinkat(t.dir, t.name.as_ptr(), 0);
                }
                libc::flock(t.fd, libc::LOCK_UN);
            }

            // Wait for the go-ahead (the metadata is written by then), or
            // for `r`: the path names another file now, start again.
            let mut got = 0;
            while got < want {
                let n = libc::read(control, buf.as_mut_ptr().add(got).cast(), want - got);
                if n > 0 {
                    got += n as usize;
                    if buf[0] == b'r' {
                        break;
                    }
                } else if n == 0 || *libc::__errno_location() != libc::EINTR {
                    // The supervisor decided otherwise, or is gone.
                    libc::_exit(crate::exit::FAILURE);
                }
            }
            if buf[0] == b'r' {
                libc::close(fd);
                continue;
            }
            break fd;
        };
        if buf[0] != GO {
            libc::_exit(crate::exit::FAILURE);
        }
        // The late variables: copied to memory that outlives this frame
        // until the exec, each entry's start put in a slot of the
        // environment (the block ends with a NUL; see `go_ahead`).
        std::ptr::copy_nonoverlapping(buf.as_ptr().add(1), late.text, LATE_LEN);
        *late.text.add(LATE_LEN - 1) = 0;
        let mut i = 0;
        let mut k = 0;
        while i < LATE_LEN && k < MAX_LATE && *late.text.add(i) != 0 {
            *late.slots.add(k) = late.text.add(i).cast_const().cast();
            k += 1;
            while i < LATE_LEN && *late.text.add(i) != 0 {
                i += 1;
            }
            i += 1;
        }
        *late.slots.add(k) = std::ptr::null();
        libc::close(control);

        // The lock goes to the promised number, inheritable.
        let slot = prep.lock_fd_slot.as_raw_fd();
        if libc::dup3(fd, slot, 0) < 0 {
            fail(Stage::Setup, errno(), crate::exit::FAILURE);
        }
        libc::close(fd);

        // The command gets the mask locksup started with.
        libc::pthread_sigmask(libc::SIG_SETMASK, &prep.mask, std::ptr::null_mut());

        let mut last = libc::ENOENT;
        let mut denied = false;
        for cand in &prep.candidates {
            libc::execve(
                cand.as_ptr(),
                prep.argv_ptrs.as_ptr(),
                prep.envp_ptrs.as_ptr(),
            );
            last = *libc::__errno_location();
            match last {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => break,
            }
        }
        if denied && matches!(last, libc::ENOENT | libc::ENOTDIR) {
            last = libc::EACCES;
        }
        let code = if last == libc::ENOENT || last == libc::ENOTDIR {
            crate::exit::NOT_FOUND
        } else {
            crate::exit::CANNOT_EXECUTE
        };
        fail(Stage::Exec, last as u64, code)
    }
}

/// What the daemon's per-attempt supervisors do between fork and exec
/// ([`prepare_supervisor`]).
pub(crate) struct SupervisorSetup {
    /// The daemon's PID: if the child's parent is not it any more after
    /// `PR_SET_PDEATHSIG`, the daemon died already and the child gives up.
    pub parent: i32,
    /// Signal the supervisor gets when the daemon dies.
    pub death_signal: Signal,
    /// `RLIMIT_NOFILE` to put back (the daemon raised its own soft limit).
    pub nofile: Option<(u64, u64)>,
    /// A cgroup v2 `cgroup.procs` file to move into (writing "0" moves the
    /// writer), for a per-attempt cgroup.
    pub cgroup_procs: Option<std::ffi::CString>,
}

/// Make `cmd`'s child set its parent-death signal (checking the parent
/// did not die first), restore the file descriptor limit, and join a
/// cgroup, before it execs.
pub(crate) fn prepare_supervisor(cmd: &mut std::process::Command, setup: SupervisorSetup) {
    use std::os::unix::process::CommandExt;
    let SupervisorSetup {
        parent,
        death_signal,
        nofile,
        cgroup_procs,
    } = setup;
    let closure = move || -> io::Result<()> {
        // SAFETY: runs in the child between fork and exec; it makes only
        // async-signal-safe system calls (prctl, getppid, setrlimit, open,
        // write, close) on memory prepared before the fork (the captured
        // values), and allocates nothing.
        unsafe {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                death_signal as libc::c_int as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some((soft, hard)) = nofile {
                let lim = libc::rlimit {
                    rlim_cur: soft as libc::rlim_t,
                    rlim_max: hard as libc::rlim_t,
                };
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            if let Some(procs) = &cgroup_procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let err = io::Error::last_os_error();
                libc::close(fd);
                if !ok {
                    return Err(err);
                }
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe calls and does not
    // allocate (see above); io::Error values built from raw OS errors do
    // not allocate either.
    unsafe {
        cmd.pre_exec(closure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for r in [
            Record::Waiting(1, 2),
            Record::Busy(u64::MAX, 0),
            Record::Locked(7, 8),
            Record::LockedNew(9, 10),
            Record::PredecessorDied,
            Record::Failed(Stage::Exec, 2),
            Record::Failed(Stage::NotRegular, 0o10644),
        ] {
            assert_eq!(Record::decode(&r.encode()), Some(r));
        }
        assert_eq!(Record::decode(&[0u8; RECORD_LEN]), None);
    }

    #[test]
    fn path_search_like_execvp() {
        let c = exec_candidates(OsStr::new("sh"), Some(OsStr::new("/a::/b"))).unwrap();
        let c: Vec<_> = c.iter().map(|s| s.to_str().unwrap().to_owned()).collect();
        assert_eq!(c, ["/a/sh", "./sh", "/b/sh"]);
        let c = exec_candidates(OsStr::new("./x"), Some(OsStr::new("/a"))).unwrap();
        assert_eq!(c[0].to_str().unwrap(), "./x");
    }

    #[test]
    fn go_ahead_is_fixed_size_and_leaves_out_what_does_not_fit() {
        let (msg, left) = go_ahead(&[]);
        assert_eq!(msg.len(), 1 + LATE_LEN);
        assert!(left.is_empty());
        let (msg, left) = go_ahead(&[
            ("LOCKSUP_DEADLINE", "2026-11-24T08:14:58.216Z".into()),
            ("LOCKSUP_FENCE", "17".into()),
            ("LOCKSUP_PREVIOUS_ATTEMPT_ID", "x".repeat(LATE_LEN)),
            ("LOCKSUP_PREVIOUS_OUTCOME", "a\0b".into()),
        ]);
        assert_eq!(msg.len(), 1 + LATE_LEN);
        assert_eq!(
            left,
            ["LOCKSUP_PREVIOUS_ATTEMPT_ID", "LOCKSUP_PREVIOUS_OUTCOME"]
        );
        assert!(
            msg.starts_with(b"gLOCKSUP_DEADLINE=2026-11-24T08:14:58.216Z\0LOCKSUP_FENCE=17\0\0")
        );
        assert_eq!(msg[LATE_LEN], 0);
    }
}
