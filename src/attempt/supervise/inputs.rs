//! The supervisor's clock and signals: a timer with the kernel's
//! precision, and the signals it listens to.

use super::*;

/// A one-shot timer with the kernel's precision (a POSIX timer delivering
/// SIGALRM), rather than the runtime's millisecond wheel, which rounds
/// every deadline up to the next millisecond tick: deadlines are what
/// locksup sells. The command gets SIGALRM back as locksup inherited it
/// (see [`crate::sys::inherited`]). Falls back to the runtime's timer if
/// the POSIX timer cannot be made.
pub(super) struct Alarm {
    timer: Option<(Timer, tokio::signal::unix::Signal)>,
}

impl Alarm {
    pub(super) fn new() -> Self {
        let event = SigEvent::new(SigevNotify::SigevSignal {
            signal: Signal::SIGALRM,
            si_value: 0,
        });
        let timer = match (
            Timer::new(ClockId::CLOCK_MONOTONIC, event),
            signal(SignalKind::alarm()),
        ) {
            (Ok(t), Ok(s)) => Some((t, s)),
            _ => None,
        };
        Self { timer }
    }

    /// Resolve at `t` (monotonic). A stray SIGALRM (an earlier arming, or
    /// `kill -ALRM`) only re-arms.
    pub(super) async fn at(&mut self, t: Instant) {
        let Some((timer, alarms)) = &mut self.timer else {
            return sleep_until(t).await;
        };
        loop {
            let now = Instant::now();
            if now >= t {
                return;
            }
            let armed = timer.set(
                Expiration::OneShot(TimeSpec::from_duration(t - now)),
                TimerSetTimeFlags::empty(),
            );
            if armed.is_err() {
                return sleep_until(t).await;
            }
            alarms.recv().await;
        }
    }
}

/// Signals the supervisor listens to.
pub(super) struct Signals {
    child: tokio::signal::unix::Signal,
    /// (signal, stream): TERM, INT, HUP, QUIT cancel; USR1, USR2, WINCH pass.
    others: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    pub(super) fn install() -> Result<Self> {
        let err = |e: std::io::Error| Error::io(format!("cannot install signal handlers: {e}"));
        let child = signal(SignalKind::child()).map_err(err)?;
        let mut others = Vec::new();
        for sig in CANCEL_SIGNALS.iter().chain(PASS_SIGNALS.iter()) {
            // A signal ignored by whoever started us stays ignored, for us
            // and (through exec) for the command.
            if sys::inherited().ignored(*sig as i32) {
                continue;
            }
            others.push((
                *sig,
                signal(SignalKind::from_raw(*sig as i32)).map_err(err)?,
            ));
        }
        Ok(Self { child, others })
    }

    /// The next signal received.
    pub(super) async fn recv(&mut self) -> Signal {
        std::future::poll_fn(|cx| {
            if self.child.poll_recv(cx).is_ready() {
                return Poll::Ready(Signal::SIGCHLD);
            }
            for (sig, stream) in &mut self.others {
                if stream.poll_recv(cx).is_ready() {
                    return Poll::Ready(*sig);
                }
            }
            Poll::Pending
        })
        .await
    }
}
