//! A small persistent thread pool for [`super::Threaded`]: starting threads
//! for every product (tens of microseconds each) would eat much of the gain
//! at the recurrent step's sizes (a few hundred microseconds of work).
//!
//! One job at a time: the caller publishes it, takes part in it, and waits
//! until every task has finished before returning, so tasks may borrow from
//! the caller's stack.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker polls for the next job before it sleeps on the
/// condition variable. Products come in bursts (35 recurrent steps, then
/// the backward pass) a few tens of microseconds apart, and waking a
/// sleeping thread can take longer than a whole product, so workers stay
/// awake briefly between jobs.
const SPIN: Duration = Duration::from_micros(200);

/// The task body, with its borrow's lifetime erased (see [`Pool::run`]).
type TaskFn = dyn Fn(usize) + Sync;

/// One published job.
struct Job {
    /// Points to the caller's closure; only dereferenced for claimed task
    /// indices `< tasks`, all of which finish before [`Pool::run`] returns.
    body: *const TaskFn,
    tasks: usize,
    /// Next unclaimed task index.
    next: AtomicUsize,
    /// Finished tasks, and whether any panicked; guarded for the wait.
    finished: Mutex<(usize, bool)>,
    all_done: Condvar,
}

// SAFETY: `body` points to a `Sync` closure that outlives every use (see
// the field's comment); the other fields are thread-safe.
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

impl Job {
    /// Claims and runs tasks until none is left.
    fn work(&self) {
        loop {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            if index >= self.tasks {
                return;
            }
            // SAFETY: index < tasks, so the caller of `Pool::run` is still
            // waiting for this task and the closure is alive.
            let body = unsafe { &*self.body };
            let panicked = catch_unwind(AssertUnwindSafe(|| body(index))).is_err();
            let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
            finished.0 += 1;
            finished.1 |= panicked;
            if finished.0 == self.tasks {
                self.all_done.notify_all();
            }
        }
    }
}

/// What the workers watch.
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// `State::generation`, readable without the lock for the spin phase.
    published: AtomicU64,
}

struct State {
    /// The current job, replaced by each `run`.
    job: Option<Arc<Job>>,
    /// Incremented with each new job so a worker runs each job once.
    generation: u64,
    stop: bool,
}

/// Persistent worker threads.
pub(crate) struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `workers` threads (0 is allowed: everything then runs on the
    /// caller's thread).
    pub(crate) fn new(workers: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                job: None,
                generation: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            published: AtomicU64::new(0),
        });
        let workers = (0..workers)
            .map(|i| {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("recur-gemm-{i}"))
                    .spawn(move || worker(&shared))
                    .expect("spawning a gemm worker thread")
            })
            .collect();
        Pool { shared, workers }
    }

    /// Number of worker threads (the caller's not counted).
    pub(crate) fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Runs `body(item)` for every item, spread over the workers and the
    /// calling thread; returns the first error in item order. Panics if a
    /// task panicked (after all tasks have finished).
    pub(crate) fn run<T: Send, E: Send>(
        &self,
        items: Vec<T>,
        body: impl Fn(T) -> Result<(), E> + Sync,
    ) -> Result<(), E> {
        let tasks = items.len();
        let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
        let results: Vec<Mutex<Option<Result<(), E>>>> =
            (0..tasks).map(|_| Mutex::new(None)).collect();
        let task = |index: usize| {
            let item = slots[index]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(item) = item {
                let r = body(item);
                *results[index].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            }
        };
        let task_ref: &(dyn Fn(usize) + Sync + '_) = &task;
        // SAFETY (lifetime erasure): `job.body` is only dereferenced for
        // claimed indices < tasks, and this function does not return until
        // all of those calls have finished (the wait below), so the closure
        // outlives every use.
        let body_ptr: *const TaskFn = unsafe {
            std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static TaskFn>(task_ref)
        };
        let job = Arc::new(Job {
            body: body_ptr,
            tasks,
            next: AtomicUsize::new(0),
            finished: Mutex::new((0, false)),
            all_done: Condvar::new(),
        });
        if tasks > 1 && !self.workers.is_empty() {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.job = Some(Arc::clone(&job));
            state.generation += 1;
            self.shared
                .published
                .store(state.generation, Ordering::Release);
            self.shared.wake.notify_all();
        }
        job.work();
        let mut finished = job.finished.lock().unwrap_or_else(|e| e.into_inner());
        while finished.0 < tasks {
            finished = job
                .all_done
                .wait(finished)
                .unwrap_or_else(|e| e.into_inner());
        }
        let panicked = finished.1;
        drop(finished);
        if panicked {
            panic!("a gemm worker task panicked");
        }
        for r in results {
            if let Some(Err(e)) = r.into_inner().unwrap_or_else(|e| e.into_inner()) {
                return Err(e);
            }
        }
        Ok(())
    }
}

fn worker(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let idle_since = Instant::now();
        while shared.published.load(Ordering::Acquire) == seen && idle_since.elapsed() < SPIN {
            std::hint::spin_loop();
        }
        let job = {
            let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if state.stop {
                    return;
                }
                if state.generation != seen {
                    seen = state.generation;
                    if let Some(job) = &state.job {
                        break Arc::clone(job);
                    }
                }
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        };
        job.work();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.stop = true;
            state.job = None;
            state.generation += 1;
            self.shared
                .published
                .store(state.generation, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
