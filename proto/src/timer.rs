//! Timers for the kit's deadlines (handshake, keepalive, idle, call and write timeouts) that
//! cost no system call to set or cancel.
//!
//! Almost every one of these timers is cancelled long before it fires: a handshake takes
//! microseconds against a 10-second deadline. `async_io::Timer` wakes its reactor on every
//! timer it registers (an `eventfd` write, an extra `epoll_wait` round with its
//! `timerfd_settime` and two `epoll_ctl` re-arms: five system calls), which on a busy
//! connection-churning server cost more than the handshake's hashing. Here one process-wide
//! thread keeps the timers in an ordered map and sleeps until the earliest one; registering a
//! timer takes a lock and a map insertion, and wakes that thread only when the new timer is
//! due before the one it sleeps for. Firing a timer wakes its task as `async_io::Timer` would.
//! A connection's loop polls its timer on every event; such a poll reads no clock while the
//! thread has fired nothing since the timer was registered (a count the thread bumps).
//!
//! If the thread cannot be started (the process is out of threads), timers fall back to
//! `async_io::Timer`, so a deadline is never lost.
//!
//! The longest timeout setting the kit takes, [`MAX_DURATION`], and the parser of timeout
//! settings for the command-line tools, [`parse_duration`], live here too.
//!
//! ```
//! use std::time::Duration;
//! use rpckit_proto::timer::Sleep;
//!
//! futures_lite::future::block_on(async {
//!     let started = std::time::Instant::now();
//!     Sleep::after(Duration::from_millis(5)).await;
//!     assert!(started.elapsed() >= Duration::from_millis(5));
//! });
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Every timer of the process that is waiting, and the thread that fires them.
struct Wheel {
    /// The timers and the thread's plan.
    inner: Mutex<Inner>,
    /// Wakes the timer thread when a timer is due before the one it sleeps for.
    wake_thread: Condvar,
    /// How many times the thread has fired timers, bumped under the lock as it takes them out
    /// of the map: a [`Sleep`] whose registration saw the same count knows that it has not
    /// fired without reading the clock.
    firings: AtomicU64,
    /// Signalled each time the timer thread goes to sleep (tests wait on it).
    #[cfg(test)]
    thread_slept: Condvar,
}

struct Inner {
    /// Waiting timers by (deadline, id); the id tells apart timers with the same deadline.
    timers: BTreeMap<(Instant, u64), Waker>,
    /// Next timer id.
    next_id: u64,
    /// When the timer thread will next look at the map on its own (`None`: only when woken).
    thread_wakes_at: Option<Instant>,
    /// What the timer thread planned to wake for when it last went to sleep, unlike
    /// `thread_wakes_at`, which `register` also sets (tests wait for it to be asleep).
    #[cfg(test)]
    slept_for: Option<Instant>,
}

impl Wheel {
    /// The process's wheel with its thread running, or `None` if no thread could be started.
    fn get() -> Option<&'static Wheel> {
        static WHEEL: OnceLock<Option<&'static Wheel>> = OnceLock::new();
        *WHEEL.get_or_init(Wheel::start)
    }

    /// A new wheel and its thread; both live as long as the process.
    fn start() -> Option<&'static Wheel> {
        let wheel: &'static Wheel = Box::leak(Box::new(Wheel {
            inner: Mutex::new(Inner {
                timers: BTreeMap::new(),
                next_id: 0,
                thread_wakes_at: None,
                #[cfg(test)]
                slept_for: None,
            }),
            wake_thread: Condvar::new(),
            firings: AtomicU64::new(0),
            #[cfg(test)]
            thread_slept: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("rpckit-timer".into())
            .spawn(move || wheel.run())
            .ok()
            .map(|_| wheel)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding this lock (wakers are woken outside it).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The timer thread: wakes the tasks of due timers, then sleeps until the next one.
    fn run(&self) {
        let mut inner = self.lock();
        let mut due = Vec::new();
        loop {
            let now = Instant::now();
            while let Some(entry) = inner.timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            if !due.is_empty() {
                self.firings.fetch_add(1, Ordering::Release);
                drop(inner);
                for waker in due.drain(..) {
                    // A waker that panics must not stop every other timer of the process.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| waker.wake()));
                }
                inner = self.lock();
                continue;
            }
            let next = inner.timers.keys().next().map(|&(at, _)| at);
            inner.thread_wakes_at = next;
            #[cfg(test)]
            {
                inner.slept_for = next;
                self.thread_slept.notify_all();
            }
            inner = match next {
                Some(at) => {
                    self.wake_thread
                        .wait_timeout(inner, at.saturating_duration_since(now))
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self
                    .wake_thread
                    .wait(inner)
                    .unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Registers a timer for `at` with `waker`, in place of the registration `old` if there is
    /// one; returns its key and the firing count it was registered at.
    fn register(&self, old: Option<(Instant, u64)>, at: Instant, waker: &Waker) -> Registration {
        let mut inner = self.lock();
        if let Some(old) = old {
            inner.timers.remove(&old);
        }
        inner.next_id += 1;
        let key = (at, inner.next_id);
        inner.timers.insert(key, waker.clone());
        if inner.thread_wakes_at.is_none_or(|planned| at < planned) {
            inner.thread_wakes_at = Some(at);
            self.wake_thread.notify_one();
        }
        Registration {
            key,
            seen: self.firings.load(Ordering::Relaxed),
        }
    }

    /// Whether the thread may have fired a timer since the firing count was `seen`; returns
    /// the count now.
    fn fired_since(&self, seen: u64) -> (bool, u64) {
        let now = self.firings.load(Ordering::Acquire);
        (now != seen, now)
    }

    fn cancel(&self, key: (Instant, u64)) {
        self.lock().timers.remove(&key);
    }
}

/// A timer's place in the wheel.
#[derive(Debug, Clone, Copy)]
struct Registration {
    /// Its key in the map.
    key: (Instant, u64),
    /// The wheel's firing count when it was registered, or last found not due.
    seen: u64,
}

/// How a [`Sleep`] is waiting.
#[derive(Debug)]
enum Waiting {
    /// Not registered anywhere (not polled yet, fired, or set to never).
    No,
    /// In the wheel, with a clone of the waker it holds there.
    Wheel(Registration, Waker),
    /// In the reactor (no timer thread could be started).
    Reactor(async_io::Timer),
}

/// The longest duration a timeout setting of the kit takes (100 years): the server and client
/// configurations cut longer ones to it, and the command-line tools refuse them. A deadline
/// that far off is as good as none, and instants computed from it cannot overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a duration written for people (`10s`, `500ms`, `2m`, `1h 30m`), as the command-line
/// tools take their timeouts, and refuses one longer than [`MAX_DURATION`]. The error says
/// what is wrong, with examples.
///
/// ```
/// use std::time::Duration;
/// use rpckit_proto::timer::parse_duration;
///
/// assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
/// assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
/// assert!(parse_duration("101 years").is_err());
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 10s, 500ms, 2m)"))?;
    if d > MAX_DURATION {
        return Err(format!(
            "{text} is longer than the longest allowed, 100 years"
        ));
    }
    Ok(d)
}

/// A future that completes at a given instant; it can be moved with [`Sleep::set_at`].
///
/// Once it has completed it stays pending until it is set again, like a one-shot
/// `async_io::Timer`. Dropping it cancels it.
#[derive(Debug)]
pub struct Sleep {
    /// When it completes; `None`: never (or it already has).
    at: Option<Instant>,
    /// Its registration.
    waiting: Waiting,
}

impl Sleep {
    /// Completes at `at`.
    pub fn at(at: Instant) -> Self {
        Sleep {
            at: Some(at),
            waiting: Waiting::No,
        }
    }

    /// Completes `after` from now (never, if that is past what an `Instant` can hold).
    pub fn after(after: Duration) -> Self {
        match Instant::now().checked_add(after) {
            Some(at) => Sleep::at(at),
            None => Sleep::never(),
        }
    }

    /// Never completes (until set).
    pub fn never() -> Self {
        Sleep {
            at: None,
            waiting: Waiting::No,
        }
    }

    /// Makes it complete at `at` instead (also after it has completed). A task already
    /// waiting on it is woken at the new time, without polling it again first.
    pub fn set_at(&mut self, at: Instant) {
        self.at = Some(at);
        match &mut self.waiting {
            Waiting::Wheel(registration, waker) => {
                if let Some(wheel) = Wheel::get() {
                    *registration = wheel.register(Some(registration.key), at, waker);
                }
            }
            Waiting::Reactor(timer) => timer.set_at(at),
            Waiting::No => {}
        }
    }

    /// When it will complete, if it is set.
    pub fn deadline(&self) -> Option<Instant> {
        self.at
    }

    fn unregister(&mut self) {
        match std::mem::replace(&mut self.waiting, Waiting::No) {
            Waiting::Wheel(registration, _) => {
                if let Some(wheel) = Wheel::get() {
                    wheel.cancel(registration.key);
                }
            }
            Waiting::Reactor(_) | Waiting::No => {}
        }
    }
}

/// Runs `fut` until `deadline` (`None`: for as long as it takes); `None` if the deadline came
/// first, in which case `fut` is dropped.
///
/// ```
/// use std::time::{Duration, Instant};
/// use rpckit_proto::timer::{until, Sleep};
///
/// futures_lite::future::block_on(async {
///     let soon = Some(Instant::now() + Duration::from_millis(5));
///     assert_eq!(until(soon, async { 7 }).await, Some(7));
///     assert_eq!(until(soon, Sleep::after(Duration::from_secs(60))).await, None);
/// });
/// ```
pub fn until<F: Future>(deadline: Option<Instant>, fut: F) -> Bounded<F> {
    Bounded {
        fut,
        limit: Limit::Until(deadline),
        sleep: Sleep::never(),
    }
}

/// Runs `fut` for at most `limit`, counted from the first poll that finds it pending; `None`
/// if the time ran out first, in which case `fut` is dropped. A limit too long for the clock
/// means none. A future ready at its first poll costs no clock read.
pub fn within<F: Future>(limit: Duration, fut: F) -> Bounded<F> {
    Bounded {
        fut,
        limit: Limit::Within(limit),
        sleep: Sleep::never(),
    }
}

/// When a [`Bounded`] future gives up.
#[derive(Debug, Clone, Copy)]
enum Limit {
    /// At this instant, or never.
    Until(Option<Instant>),
    /// This long after the first poll that finds the future pending.
    Within(Duration),
    /// Set: the sleep holds the deadline, if there is one.
    Armed(bool),
}

impl Limit {
    /// At the first poll that finds the future pending: turns the limit into its deadline,
    /// which it returns for the sleep to hold (`None`: no deadline, or armed already).
    fn arm(&mut self) -> Option<Instant> {
        let at = match *self {
            Limit::Until(at) => at,
            Limit::Within(limit) => Instant::now().checked_add(limit),
            Limit::Armed(_) => return None,
        };
        *self = Limit::Armed(at.is_some());
        at
    }
}

pin_project_lite::pin_project! {
    /// A future run under a time limit: [`until`] and [`within`]. It holds the future it runs
    /// and one [`Sleep`], nothing else, so bounding a wait does not make the task that waits
    /// any larger than the wait itself (every connection's task holds a few).
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Bounded<F> {
        #[pin]
        fut: F,
        limit: Limit,
        sleep: Sleep,
    }
}

impl<F: Future> Future for Bounded<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The future first, then the time: a future that is ready wins a tie, and one ready at
        // its first poll (a write the socket takes at once) costs no clock read and no timer.
        if let Poll::Ready(output) = this.fut.poll(cx) {
            return Poll::Ready(Some(output));
        }
        if let Some(at) = this.limit.arm() {
            this.sleep.set_at(at);
        }
        match *this.limit {
            Limit::Armed(true) => Pin::new(this.sleep).poll(cx).map(|()| None),
            _ => Poll::Pending,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let Some(at) = this.at else {
            return Poll::Pending;
        };
        // Polled again by the task it would wake (a connection's loop polls its timer on every
        // event): if the wheel has fired nothing since, this one is not due, and the clock
        // need not be read.
        let due = match (&mut this.waiting, Wheel::get()) {
            (Waiting::Wheel(registration, waker), Some(wheel)) if waker.will_wake(cx.waker()) => {
                let (maybe, count) = wheel.fired_since(registration.seen);
                if !maybe {
                    return Poll::Pending;
                }
                let due = Instant::now() >= at;
                if !due {
                    // Not fired: the count was read before the clock, and a firing of this
                    // timer would have read a clock past `at` before bumping it.
                    registration.seen = count;
                }
                due
            }
            _ => Instant::now() >= at,
        };
        if due {
            this.unregister();
            this.at = None;
            return Poll::Ready(());
        }
        match &mut this.waiting {
            Waiting::Wheel(_, waker) if waker.will_wake(cx.waker()) => Poll::Pending,
            Waiting::Reactor(timer) => match Pin::new(timer).poll(cx) {
                Poll::Ready(_) => {
                    this.waiting = Waiting::No;
                    this.at = None;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
            waiting => {
                // Not registered yet, or registered with another task's waker.
                let old = match waiting {
                    Waiting::Wheel(registration, _) => Some(registration.key),
                    _ => None,
                };
                *waiting = match Wheel::get() {
                    Some(wheel) => {
                        Waiting::Wheel(wheel.register(old, at, cx.waker()), cx.waker().clone())
                    }
                    None => {
                        let mut timer = async_io::Timer::at(at);
                        if Pin::new(&mut timer).poll(cx).is_ready() {
                            this.at = None;
                            this.waiting = Waiting::No;
                            return Poll::Ready(());
                        }
                        Waiting::Reactor(timer)
                    }
                };
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future;

    /// A waker that reports each wake on a channel, so a test can wait for it with a time limit
    /// without polling anything again.
    fn channel_waker() -> (Waker, std::sync::mpsc::Receiver<()>) {
        struct ToChannel(std::sync::mpsc::Sender<()>);
        impl std::task::Wake for ToChannel {
            fn wake(self: std::sync::Arc<Self>) {
                let _ = self.0.send(());
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        (Waker::from(std::sync::Arc::new(ToChannel(tx))), rx)
    }

    #[test]
    fn within_gives_up_at_its_limit_and_an_endless_limit_is_none() {
        future::block_on(async {
            let started = Instant::now();
            let slow = within(
                Duration::from_millis(5),
                Sleep::after(Duration::from_secs(60)),
            );
            assert_eq!(slow.await, None);
            assert!(started.elapsed() >= Duration::from_millis(5));
            assert_eq!(within(Duration::MAX, async { 3 }).await, Some(3));
            assert_eq!(until(None, async { 4 }).await, Some(4));
        });
    }

    #[test]
    fn a_timer_polled_again_is_ready_at_its_own_time_whatever_fired_in_between() {
        // Polled again by the task it wakes, a timer trusts the wheel's firing count instead
        // of the clock while nothing has fired; after another timer fires it has to look.
        let (waker, woken) = channel_waker();
        let mut cx = Context::from_waker(&waker);
        let due = Instant::now() + Duration::from_millis(100);
        let mut own = Sleep::at(due);
        assert!(Pin::new(&mut own).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut own).poll(&mut cx).is_pending() || Instant::now() >= due);
        // Another timer fires (woken, not polled again: the wheel's count moves all the same).
        let (other_waker, other_woken) = channel_waker();
        let mut other = Sleep::after(Duration::from_millis(1));
        assert!(Pin::new(&mut other)
            .poll(&mut Context::from_waker(&other_waker))
            .is_pending());
        assert!(
            other_woken.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the other timer never fired"
        );
        if Pin::new(&mut own).poll(&mut cx).is_ready() {
            assert!(Instant::now() >= due, "ready before its time");
            return;
        }
        assert!(
            woken.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the timer never woke its task"
        );
        assert!(Pin::new(&mut own).poll(&mut cx).is_ready());
        assert!(Instant::now() >= due);
    }

    #[test]
    fn fires_in_deadline_order_and_not_before() {
        future::block_on(async {
            let start = Instant::now();
            let late = Sleep::after(Duration::from_millis(40));
            let early = Sleep::after(Duration::from_millis(10));
            let first = future::or(
                async {
                    late.await;
                    40
                },
                async {
                    early.await;
                    10
                },
            )
            .await;
            assert_eq!(first, 10);
            assert!(start.elapsed() >= Duration::from_millis(10));
        });
    }

    #[test]
    fn an_earlier_timer_wakes_the_thread_sleeping_for_a_later_one() {
        // A wheel of its own, so that no other test's timers wake its thread.
        let wheel = Wheel::start().expect("a timer thread starts");
        let (long_waker, _long) = channel_waker();
        let long_at = Instant::now() + Duration::from_secs(3600);
        wheel.register(None, long_at, &long_waker);
        // Wait until the thread sleeps for the long timer: it signals each time it goes to
        // sleep, and notes what for (the lock is released while it sleeps, so it is asleep
        // once we hold it; `register` has already set `thread_wakes_at`, awake or not).
        let (inner, waited) = wheel
            .thread_slept
            .wait_timeout_while(wheel.lock(), Duration::from_secs(10), |inner| {
                inner.slept_for != Some(long_at)
            })
            .expect("the timer lock is not poisoned");
        assert!(!waited.timed_out(), "the timer thread never slept");
        drop(inner);
        // The short one must not wait for it.
        let (short_waker, short) = channel_waker();
        wheel.register(
            None,
            Instant::now() + Duration::from_millis(5),
            &short_waker,
        );
        assert!(
            short.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the short timer did not fire"
        );
    }

    #[test]
    fn set_at_moves_it_and_revives_it_after_it_fired() {
        future::block_on(async {
            let mut sleep = Sleep::after(Duration::from_secs(3600));
            assert!(future::poll_once(&mut sleep).await.is_none());
            sleep.set_at(Instant::now() + Duration::from_millis(2));
            (&mut sleep).await;
            // Fired: pending until set again.
            assert!(sleep.deadline().is_none());
            assert!(future::poll_once(&mut sleep).await.is_none());
            sleep.set_at(Instant::now());
            (&mut sleep).await;
        });
    }

    #[test]
    fn moving_it_earlier_wakes_the_task_already_waiting_on_it() {
        // The task polled it once and waits; someone else moves it earlier without polling it
        // (as the client's callers move the reader task's alarm).
        let (waker, woken) = channel_waker();
        let mut sleep = Sleep::after(Duration::from_secs(3600));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut sleep).poll(&mut cx).is_pending());
        sleep.set_at(Instant::now() + Duration::from_millis(5));
        assert!(
            woken.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the moved timer never woke its task"
        );
    }

    #[test]
    fn a_duration_too_long_for_an_instant_never_fires() {
        future::block_on(async {
            let mut forever = Sleep::after(Duration::MAX);
            assert!(forever.deadline().is_none());
            assert!(future::poll_once(&mut forever).await.is_none());
        });
    }

    #[test]
    fn never_stays_pending_and_dropping_cancels() {
        future::block_on(async {
            let mut never = Sleep::never();
            assert!(future::poll_once(&mut never).await.is_none());
            let mut dropped = Sleep::after(Duration::from_secs(3600));
            assert!(future::poll_once(&mut dropped).await.is_none());
            let key = match &dropped.waiting {
                Waiting::Wheel(registration, _) => registration.key,
                other => panic!("expected a wheel registration, got {other:?}"),
            };
            drop(dropped);
            let wheel = Wheel::get().expect("the timer thread runs in tests");
            assert!(!wheel.lock().timers.contains_key(&key));
        });
    }
}
