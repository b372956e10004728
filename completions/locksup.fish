# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_locksup_global_optspecs
    string join \n config= h/help V/version
end

function __fish_locksup_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_locksup_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_locksup_using_subcommand
    set -l cmd (__fish_locksup_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c locksup -n "__fish_locksup_needs_command" -l config -d 'Read configuration from FILE instead of the default locations' -r -F
complete -c locksup -n "__fish_locksup_needs_command" -s h -l help -d 'Print help'
complete -c locksup -n "__fish_locksup_needs_command" -s V -l version -d 'Print version'
complete -c locksup -n "__fish_locksup_needs_command" -f -a "run" -d 'Run COMMAND as a supervised attempt holding the session\'s lock'
complete -c locksup -n "__fish_locksup_needs_command" -f -a "status" -d 'Show every lock file under PATHs (or the configured roots): who holds it, since when, until when, and who waits'
complete -c locksup -n "__fish_locksup_needs_command" -f -a "watch" -d 'Follow the lock files under PATHs (or the configured roots) live, driven by inotify: a table on a terminal, change events with --json'
complete -c locksup -n "__fish_locksup_needs_command" -f -a "cancel" -d 'End the attempt holding a lock: signal its supervisor, or, for an orphan, end the processes holding it'
complete -c locksup -n "__fish_locksup_needs_command" -f -a "serve" -d 'Supervise attempts submitted by local clients (locksup run --daemon) on a Unix socket, each with exactly the semantics of locksup run; a service for systemd (see locksup-serve(8))'
complete -c locksup -n "__fish_locksup_needs_command" -f -a "timeline" -d 'Draw the attempts of --events files as an SVG timeline: a lane per lock, a bar per attempt coloured by outcome, signals, leaks'
complete -c locksup -n "__fish_locksup_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh or fish) on stdout'
complete -c locksup -n "__fish_locksup_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c locksup -n "__fish_locksup_using_subcommand run" -l session -d 'Session file; the lock file is FILE.lock beside it. The session file itself is never opened or created' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand run" -l lock -d 'Lock file to use as it is' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand run" -s t -l timeout -d 'How long the attempt may hold the lock, counted from acquisition [default: 10m; 0 or infinity: no limit]' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -s g -l grace -d 'Wait between the first and the final signal [default: 10s]' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -s w -l wait -d 'How long to wait for a busy lock [default: 60s; 0: don\'t wait]' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -s s -l signal -d 'First signal sent to the attempt on timeout [default: TERM]' -r -f -a "HUP\t''
INT\t''
QUIT\t''
ILL\t''
TRAP\t''
ABRT\t''
BUS\t''
FPE\t''
KILL\t''
USR1\t''
SEGV\t''
USR2\t''
PIPE\t''
ALRM\t''
TERM\t''
STKFLT\t''
CHLD\t''
CONT\t''
STOP\t''
TSTP\t''
TTIN\t''
TTOU\t''
URG\t''
XCPU\t''
XFSZ\t''
VTALRM\t''
PROF\t''
WINCH\t''
IO\t''
PWR\t''
SYS\t''"
complete -c locksup -n "__fish_locksup_using_subcommand run" -l final-signal -d 'Signal sent to whatever is left after the grace period [default: KILL]' -r -f -a "HUP\t''
INT\t''
QUIT\t''
ILL\t''
TRAP\t''
ABRT\t''
BUS\t''
FPE\t''
KILL\t''
USR1\t''
SEGV\t''
USR2\t''
PIPE\t''
ALRM\t''
TERM\t''
STKFLT\t''
CHLD\t''
CONT\t''
STOP\t''
TSTP\t''
TTIN\t''
TTOU\t''
URG\t''
XCPU\t''
XFSZ\t''
VTALRM\t''
PROF\t''
WINCH\t''
IO\t''
PWR\t''
SYS\t''"
complete -c locksup -n "__fish_locksup_using_subcommand run" -l watchdog -d 'End the attempt when no heartbeat (WATCHDOG=1 on NOTIFY_SOCKET, or a touch of the lock file) came for DUR; exit codes as for a timeout' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -l max-timeout -d 'Hard cap on the deadline, from acquisition, however the attempt extends it with EXTEND_TIMEOUT_USEC [default: none]' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -l ready-timeout -d 'End the attempt when it has not sent READY=1 within DUR of acquiring the lock [default: readiness not required]' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -l on-lock-removed -d 'What to do when the held lock file is removed or replaced: `cancel` (end the attempt) or `warn` [default: cancel]' -r -f -a "cancel\t''
warn\t''"
complete -c locksup -n "__fish_locksup_using_subcommand run" -l order -d 'In which order waiting attempts get the lock: `fifo` (the order they started waiting, through the lock\'s queue) or `any` (as the kernel hands it out) [default: fifo]' -r -f -a "fifo\t''
any\t''"
complete -c locksup -n "__fish_locksup_using_subcommand run" -l backend -d 'Where the lock lives: `flock` (the lock file, one host) or `etcd` (a lock in etcd that several hosts share, then the lock file) [default: flock]' -r -f -a "flock\t''
etcd\t''"
complete -c locksup -n "__fish_locksup_using_subcommand run" -l etcd-endpoints -d 'etcd endpoints, comma-separated, as etcdctl takes them (also ETCDCTL_ENDPOINTS) [default: 127.0.0.1:2379]' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -l etcd-key -d 'The lock\'s name in etcd: the lock is PREFIX/NAME [default: the lock file\'s absolute path without its leading /]' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -l etcd-prefix -d 'Prefix of every lock key in etcd [default: /locksup]' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -l etcd-ttl -d 'Lease TTL of the etcd lock, whole seconds [default: 10s, or what the grace needs: 26s for a grace of 10s]' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -l conflict-exit-code -d 'Exit code when the lock is not obtained [default: 75]' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -l attempt-id -d 'Attempt id recorded in the lock metadata and events [default: generated]' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -l session-key -d 'Caller\'s key for the session, recorded in metadata and events' -r
complete -c locksup -n "__fish_locksup_using_subcommand run" -l events -d 'Append JSON-lines lifecycle events to PATH ("-" for stderr)' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand run" -l socket -d 'The daemon\'s socket [default: [serve] socket, else $RUNTIME_DIRECTORY/locksup.sock, else /run/locksup/locksup.sock]' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand run" -l config -d 'Read configuration from FILE instead of the default locations' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand run" -s n -l no-wait -d 'Don\'t wait for a busy lock (same as --wait 0)'
complete -c locksup -n "__fish_locksup_using_subcommand run" -l shared -d 'Take a shared lock instead of an exclusive one'
complete -c locksup -n "__fish_locksup_using_subcommand run" -l preserve-status -d 'On timeout, exit with the command\'s own status instead of 124'
complete -c locksup -n "__fish_locksup_using_subcommand run" -l foreground -d 'Keep the command in locksup\'s process group, so an interactive command can read from the terminal; the whole tree is still ended on time (found through the process tree, not the group)'
complete -c locksup -n "__fish_locksup_using_subcommand run" -l die-with-parent -d 'End the attempt (first signal, grace, final signal) when the process that started locksup dies'
complete -c locksup -n "__fish_locksup_using_subcommand run" -s v -l verbose -d 'Print lifecycle lines on stderr'
complete -c locksup -n "__fish_locksup_using_subcommand run" -l daemon -d 'Submit the attempt to the daemon (locksup serve) instead of supervising it here: same options, same exit status; this process\'s stdin, stdout and stderr are the attempt\'s'
complete -c locksup -n "__fish_locksup_using_subcommand run" -s h -l help -d 'Print help'
complete -c locksup -n "__fish_locksup_using_subcommand status" -l state -d 'Show only locks in these states (repeat or separate with commas)' -r -f -a "free\t'Nobody holds it'
held\t'Held, in time (or by another tool)'
overdue\t'Held past deadline + grace'
orphan\t'Held, and nobody will end it'"
complete -c locksup -n "__fish_locksup_using_subcommand status" -l session-key -d 'Show only locks whose attempt was given this --session-key' -r
complete -c locksup -n "__fish_locksup_using_subcommand status" -l socket -d 'The daemon\'s socket [default: [serve] socket, else $RUNTIME_DIRECTORY/locksup.sock, else /run/locksup/locksup.sock]' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand status" -l backend -d 'Look at the etcd cluster instead of lock files: every lock under the prefix, or the NAMEs given (status, watch), or the holder of lock NAME (cancel) [default: flock]' -r -f -a "flock\t''
etcd\t''"
complete -c locksup -n "__fish_locksup_using_subcommand status" -l etcd-endpoints -d 'etcd endpoints, comma-separated (also ETCDCTL_ENDPOINTS and the configuration\'s [etcd] endpoints) [default: 127.0.0.1:2379]' -r
complete -c locksup -n "__fish_locksup_using_subcommand status" -l etcd-prefix -d 'Prefix of every lock key in etcd [default: /locksup]' -r
complete -c locksup -n "__fish_locksup_using_subcommand status" -l config -d 'Read configuration from FILE instead of the default locations' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand status" -l json -d 'Print JSON (a stable schema with a top-level "locks" array)'
complete -c locksup -n "__fish_locksup_using_subcommand status" -l daemon -d 'Ask the daemon (locksup serve) for the attempts it runs now, and how they are contained (its own user, root and [serve] admin_groups see every attempt; others see their own)'
complete -c locksup -n "__fish_locksup_using_subcommand status" -l history -d 'With --daemon: the attempts that have ended lately instead (the last [serve] history of them, newest first), with their outcome, exit status, wait and hold times'
complete -c locksup -n "__fish_locksup_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c locksup -n "__fish_locksup_using_subcommand watch" -l backend -d 'Look at the etcd cluster instead of lock files: every lock under the prefix, or the NAMEs given (status, watch), or the holder of lock NAME (cancel) [default: flock]' -r -f -a "flock\t''
etcd\t''"
complete -c locksup -n "__fish_locksup_using_subcommand watch" -l etcd-endpoints -d 'etcd endpoints, comma-separated (also ETCDCTL_ENDPOINTS and the configuration\'s [etcd] endpoints) [default: 127.0.0.1:2379]' -r
complete -c locksup -n "__fish_locksup_using_subcommand watch" -l etcd-prefix -d 'Prefix of every lock key in etcd [default: /locksup]' -r
complete -c locksup -n "__fish_locksup_using_subcommand watch" -l config -d 'Read configuration from FILE instead of the default locations' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand watch" -l json -d 'Print one JSON change event per line'
complete -c locksup -n "__fish_locksup_using_subcommand watch" -s h -l help -d 'Print help'
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -s s -l signal -d 'Signal to send: to a supervisor, TERM, INT, HUP or QUIT; to the holders of an orphan, any [default: TERM]' -r -f -a "HUP\t''
INT\t''
QUIT\t''
ILL\t''
TRAP\t''
ABRT\t''
BUS\t''
FPE\t''
KILL\t''
USR1\t''
SEGV\t''
USR2\t''
PIPE\t''
ALRM\t''
TERM\t''
STKFLT\t''
CHLD\t''
CONT\t''
STOP\t''
TSTP\t''
TTIN\t''
TTOU\t''
URG\t''
XCPU\t''
XFSZ\t''
VTALRM\t''
PROF\t''
WINCH\t''
IO\t''
PWR\t''
SYS\t''"
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -s w -l wait -d 'Wait until the attempt no longer holds the lock, at most DUR (infinity: as long as it takes), and say how long it took' -r
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -s g -l grace -d 'For an orphan: wait between the signal and KILL [default: the attempt\'s recorded grace, else 10s; infinity: never KILL]' -r
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -l root -d 'Where to look for an attempt id (repeatable) [default: the configuration\'s [status] roots]' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -l socket -d 'The daemon\'s socket [default: [serve] socket, else $RUNTIME_DIRECTORY/locksup.sock, else /run/locksup/locksup.sock]' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -l backend -d 'Look at the etcd cluster instead of lock files: every lock under the prefix, or the NAMEs given (status, watch), or the holder of lock NAME (cancel) [default: flock]' -r -f -a "flock\t''
etcd\t''"
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -l etcd-endpoints -d 'etcd endpoints, comma-separated (also ETCDCTL_ENDPOINTS and the configuration\'s [etcd] endpoints) [default: 127.0.0.1:2379]' -r
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -l etcd-prefix -d 'Prefix of every lock key in etcd [default: /locksup]' -r
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -l config -d 'Read configuration from FILE instead of the default locations' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -l force -d 'Also end the holders of a lock taken by another tool (no metadata)'
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -l only-orphan -d 'Act only when the lock is an orphan (nobody supervises it); leave it alone, with exit status 2, otherwise. For periodic reaping'
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -l daemon -d 'Ask the daemon (locksup serve) to cancel one of its attempts: TARGET is its attempt id, lock file or session file. Permitted for the attempt\'s own user and members of [serve] admin_groups'
complete -c locksup -n "__fish_locksup_using_subcommand cancel" -s h -l help -d 'Print help'
complete -c locksup -n "__fish_locksup_using_subcommand serve" -l socket -d 'Listen on PATH [default: [serve] socket, else $RUNTIME_DIRECTORY/locksup.sock, else /run/locksup/locksup.sock]' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand serve" -l config -d 'Read configuration from FILE instead of the default locations' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand serve" -s h -l help -d 'Print help'
complete -c locksup -n "__fish_locksup_using_subcommand timeline" -s o -l output -d 'Write the SVG to FILE instead of stdout' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand timeline" -l config -d 'Read configuration from FILE instead of the default locations' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand timeline" -s h -l help -d 'Print help'
complete -c locksup -n "__fish_locksup_using_subcommand completions" -l config -d 'Read configuration from FILE instead of the default locations' -r -F
complete -c locksup -n "__fish_locksup_using_subcommand completions" -s h -l help -d 'Print help'
complete -c locksup -n "__fish_locksup_using_subcommand help; and not __fish_seen_subcommand_from run status watch cancel serve timeline completions help" -f -a "run" -d 'Run COMMAND as a supervised attempt holding the session\'s lock'
complete -c locksup -n "__fish_locksup_using_subcommand help; and not __fish_seen_subcommand_from run status watch cancel serve timeline completions help" -f -a "status" -d 'Show every lock file under PATHs (or the configured roots): who holds it, since when, until when, and who waits'
complete -c locksup -n "__fish_locksup_using_subcommand help; and not __fish_seen_subcommand_from run status watch cancel serve timeline completions help" -f -a "watch" -d 'Follow the lock files under PATHs (or the configured roots) live, driven by inotify: a table on a terminal, change events with --json'
complete -c locksup -n "__fish_locksup_using_subcommand help; and not __fish_seen_subcommand_from run status watch cancel serve timeline completions help" -f -a "cancel" -d 'End the attempt holding a lock: signal its supervisor, or, for an orphan, end the processes holding it'
complete -c locksup -n "__fish_locksup_using_subcommand help; and not __fish_seen_subcommand_from run status watch cancel serve timeline completions help" -f -a "serve" -d 'Supervise attempts submitted by local clients (locksup run --daemon) on a Unix socket, each with exactly the semantics of locksup run; a service for systemd (see locksup-serve(8))'
complete -c locksup -n "__fish_locksup_using_subcommand help; and not __fish_seen_subcommand_from run status watch cancel serve timeline completions help" -f -a "timeline" -d 'Draw the attempts of --events files as an SVG timeline: a lane per lock, a bar per attempt coloured by outcome, signals, leaks'
complete -c locksup -n "__fish_locksup_using_subcommand help; and not __fish_seen_subcommand_from run status watch cancel serve timeline completions help" -f -a "completions" -d 'Print a shell completion script (bash, zsh or fish) on stdout'
complete -c locksup -n "__fish_locksup_using_subcommand help; and not __fish_seen_subcommand_from run status watch cancel serve timeline completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
