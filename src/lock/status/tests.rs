//! Unit tests of the status model.
use super::*;

pub(crate) fn meta(pid: i32, sup: i32, sup_start: u64) -> Metadata {
    Metadata {
        v: 1,
        pid,
        pgid: pid,
        created_at: "2026-01-01T00:00:00.000Z".into(),
        starttime: procfs::starttime(pid).unwrap_or(0),
        supervisor_pid: sup,
        supervisor_starttime: sup_start,
        attempt_id: "att-1".into(),
        session: Some("/r/abc.jsonl".into()),
        session_key: Some("key".into()),
        command: vec!["sleep".into(), "60".into()],
        acquired_at: "2026-01-01T00:00:00.000Z".into(),
        deadline: Some("2026-01-01T00:10:00.000Z".into()),
        timeout_ms: Some(600_000),
        grace_ms: Some(10_000),
        host: "h".into(),
        last_heartbeat: None,
        status: None,
        watchdog_ms: None,
        guardian_pid: None,
        fence: Some(42),
    }
}

pub(crate) fn file(inode: u64) -> LockFile {
    LockFile {
        path: PathBuf::from(format!("/r/{inode}.lock")),
        id: FileId {
            major: 0xfe,
            minor: 0,
            inode,
        },
        root: PathBuf::from("/r"),
    }
}

pub(crate) fn at(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap()
}

#[test]
fn states_from_recorded_kernel_text() {
    let me = std::process::id() as i32;
    let my_start = procfs::starttime(me).unwrap();
    let text = format!(
        "1: FLOCK  ADVISORY  WRITE {me} fe:00:1 0 EOF\n\
         1: -> FLOCK  ADVISORY  WRITE {me} fe:00:1 0 EOF\n\
         2: FLOCK  ADVISORY  WRITE {me} fe:00:2 0 EOF\n\
         3: FLOCK  ADVISORY  WRITE {me} fe:00:3 0 EOF\n\
         4: FLOCK  ADVISORY  READ {me} fe:00:4 0 EOF\n\
         5: FLOCK  ADVISORY  WRITE {me} fe:01:5 0 EOF\n"
    );
    let kernel = Kernel::from_entries(procfs::parse_locks(&text));
    let files: Vec<LockFile> = (1..=5).map(file).chain([file(6)]).collect();
    let mut ev = Evaluator::new();
    let now = at("2026-01-01T00:05:00.000Z");
    let got = ev.evaluate(&files, &kernel, now, &mut |f| match f.id.inode {
        // Ours, supervised by ourselves: held, 5 minutes left.
        1 => Some(meta(me, me, my_start)),
        // The supervisor's start time does not match: orphan.
        2 => Some(meta(me, me, my_start + 1)),
        // Metadata of an earlier holder: another tool's lock.
        3 => Some(meta(me + 1, me, my_start)),
        _ => None,
    });
    let states: Vec<State> = got.iter().map(|l| l.state).collect();
    assert_eq!(
        states,
        [
            State::Held,
            State::Orphan,
            State::Held,
            State::Held,
            State::Free,
            State::Free
        ]
    );
    assert_eq!(got[0].waiters, vec![me]);
    assert_eq!(got[0].left_ms, Some(300_000));
    assert_eq!(got[0].held, Some(Duration::from_secs(300)));
    assert_eq!(got[0].pid(), Some(me));
    assert!(got[2].metadata.is_none());
    assert_eq!(got[3].exclusive, Some(false));
    // Device differs (fe:01 vs fe:00): not joined.
    assert_eq!(got[4].state, State::Free);

    // Past deadline + grace + slack: overdue.
    let late = at("2026-01-01T00:10:11.500Z");
    let got = ev.evaluate(&files[..1], &kernel, late, &mut |_| {
        Some(meta(me, me, my_start))
    });
    assert_eq!(got[0].state, State::Overdue);
    assert_eq!(got[0].left_ms, Some(-11_500));
    // Within the grace: still held.
    let grace = at("2026-01-01T00:10:05.000Z");
    let got = ev.evaluate(&files[..1], &kernel, grace, &mut |_| {
        Some(meta(me, me, my_start))
    });
    assert_eq!(got[0].state, State::Held);
    // Infinite grace: never overdue.
    let got = ev.evaluate(&files[..1], &kernel, late, &mut |_| {
        Some(Metadata {
            grace_ms: None,
            ..meta(me, me, my_start)
        })
    });
    assert_eq!(got[0].state, State::Held);
}

#[test]
fn filters_by_state_and_key() {
    let me = std::process::id() as i32;
    let my_start = procfs::starttime(me).unwrap();
    let text = format!("1: FLOCK  ADVISORY  WRITE {me} fe:00:1 0 EOF\n");
    let kernel = Kernel::from_entries(procfs::parse_locks(&text));
    let got = Evaluator::new().evaluate(
        &[file(1), file(2)],
        &kernel,
        at("2026-01-01T00:05:00.000Z"),
        &mut |f| (f.id.inode == 1).then(|| meta(me, me, my_start)),
    );
    assert_eq!(filter(got.clone(), &[State::Free], None).len(), 1);
    assert_eq!(
        filter(got.clone(), &[State::Held, State::Free], None).len(),
        2
    );
    assert_eq!(filter(got.clone(), &[], Some("key")).len(), 1);
    assert_eq!(filter(got, &[], Some("other")).len(), 0);
}

#[test]
fn lock_names() {
    assert!(is_lock_name("a.jsonl.lock".as_ref()));
    assert!(is_lock_name(".lock".as_ref()));
    assert!(!is_lock_name("lock".as_ref()));
    assert!(!is_lock_name("a.lock.tmp".as_ref()));
}
