//! Where a training step's GPU time goes, for benchmarks: with
//! [`DeviceTrainer::time_phases`] on, the main stream records a
//! time-stamped event at each phase boundary of each step (no host wait),
//! and [`DeviceTrainer::take_phase_times`] reads them all after one wait.
//! The phases are those of the main stream, the critical path; what runs
//! beside it on the side stream shows only where the main stream waits for
//! it (the backward's end joins it).

use super::*;

/// The phases of a training step, in order, between time-stamped events
/// on the main stream: a step's time is their sum.
pub const STEP_PHASES: [&str; 8] = [
    "upload + state in",
    "forward loop",
    "logits + loss",
    "backward: dhs",
    "backward loop",
    "weight gradients",
    "clip",
    "update",
];

/// Phase boundaries: the mark ending phase i is i + 1; `ForwardStart`
/// opens a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    ForwardStart,
    ForwardLoopStart,
    ForwardLoopEnd,
    ForwardEnd,
    BackwardLoopStart,
    BackwardLoopEnd,
    BackwardEnd,
    ClipEnd,
    UpdateEnd,
}

const MARKS: usize = STEP_PHASES.len() + 1;

/// One step's phase durations (µs of GPU time): phase i is the time from
/// the latest mark before its end to its end, `None` where its end was not
/// recorded (e.g. no clip called).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTimes {
    pub phases_us: [Option<f64>; STEP_PHASES.len()],
}

/// Time-stamped events of up to `capacity` steps (the first ones after
/// the timer was made or last taken).
pub(super) struct PhaseTimer {
    /// Step s's mark m at s·MARKS + m.
    events: Vec<StreamEvent>,
    /// Marks recorded per step (bit m: mark m).
    recorded: Vec<Cell<u16>>,
    /// Steps opened so far (the current one is `opened − 1`).
    opened: Cell<usize>,
    /// A step past the capacity has begun: its marks are not recorded (nor
    /// put on the last recorded step).
    full: Cell<bool>,
}

impl PhaseTimer {
    pub(super) fn new(gpu: &Gpu, capacity: usize) -> Result<PhaseTimer, Error> {
        let events = (0..capacity * MARKS)
            .map(|_| gpu.timing_event())
            .collect::<Result<_, _>>()?;
        Ok(PhaseTimer {
            recorded: (0..capacity).map(|_| Cell::new(0)).collect(),
            events,
            opened: Cell::new(0),
            full: Cell::new(false),
        })
    }

    /// Records `mark` of the current step on the main stream (`ForwardStart`
    /// opens the next step; nothing once `capacity` steps are open, or
    /// before the first).
    pub(super) fn mark(&self, gpu: &Gpu, mark: Mark) -> Result<(), Error> {
        if mark == Mark::ForwardStart {
            if self.opened.get() == self.recorded.len() {
                self.full.set(true);
            } else {
                self.opened.set(self.opened.get() + 1);
            }
        }
        if self.full.get() {
            return Ok(());
        }
        let Some(step) = self.opened.get().checked_sub(1) else {
            return Ok(());
        };
        let m = mark as usize;
        gpu.record(&self.events[step * MARKS + m], Lane::Main)?;
        let bits = &self.recorded[step];
        bits.set(bits.get() | 1 << m);
        Ok(())
    }

    /// The recorded steps' times (after a synchronize); resets the timer.
    pub(super) fn take(&self, gpu: &Gpu) -> Result<Vec<StepTimes>, Error> {
        let mut out = Vec::with_capacity(self.opened.get());
        for (step, bits) in self.recorded.iter().enumerate().take(self.opened.get()) {
            let bits = bits.replace(0);
            let mut phases_us = [None; STEP_PHASES.len()];
            let mut last = ((bits & 1) != 0).then_some(0);
            for m in 1..MARKS {
                if bits & (1 << m) == 0 {
                    continue;
                }
                if let Some(from) = last {
                    let ev = &self.events[step * MARKS..];
                    phases_us[m - 1] = Some(gpu.elapsed_us(&ev[from], &ev[m])?);
                }
                last = Some(m);
            }
            out.push(StepTimes { phases_us });
        }
        self.opened.set(0);
        self.full.set(false);
        Ok(out)
    }
}

impl DeviceTrainer {
    /// Starts recording the phase times of the next `steps` training steps
    /// (forward, backward, clip, update; [`STEP_PHASES`]), or stops with
    /// `0`. For benchmarks: each step records 9 events on the main stream.
    pub fn time_phases(&mut self, steps: usize) -> Result<(), Error> {
        self.phase_timer = if steps == 0 {
            None
        } else {
            Some(PhaseTimer::new(&self.gpu, steps)?)
        };
        Ok(())
    }

    /// Waits for the GPU, then returns the phase times of the steps recorded
    /// since [`Self::time_phases`] or the last take (empty when off), and
    /// starts over.
    pub fn take_phase_times(&mut self) -> Result<Vec<StepTimes>, Error> {
        let Some(timer) = &self.phase_timer else {
            return Ok(Vec::new());
        };
        self.gpu.bind()?;
        self.gpu.synchronize()?;
        timer.take(&self.gpu)
    }

    /// Records `mark` where phase timing is on.
    pub(super) fn mark(&self, mark: Mark) -> Result<(), Error> {
        match &self.phase_timer {
            Some(t) => t.mark(&self.gpu, mark),
            None => Ok(()),
        }
    }
}
