//! Sampling allocates nothing: after construction, `set_epoch`, `batch` and
//! `batch_into` reuse the sampler's buffers. Checked with an allocator that
//! counts the allocations of the current thread while asked to.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use recur_data::{Sampler, SamplerKind};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // try_with: the thread-locals may be gone while a thread shuts down.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(|n| n.get())
}

#[test]
fn sampling_does_not_allocate() {
    let tokens: Vec<u32> = (0..10_000).map(|i| i % 1027).collect();
    for kind in SamplerKind::ALL {
        let mut sampler = Sampler::new(kind, tokens.clone(), 32, 35, 1).expect("sampler");
        let mut inputs = vec![0u32; sampler.batch_len()];
        let mut targets = vec![0u32; sampler.batch_len()];
        // The counter works: a Vec allocates.
        assert_eq!(allocations(|| drop(std::hint::black_box(vec![1u8; 8]))), 1);
        let mut checksum = 0u64;
        let count = allocations(|| {
            for epoch in 0..3 {
                sampler.set_epoch(epoch);
                for i in 0..sampler.epoch_size() {
                    let batch = sampler.batch(i).expect("batch");
                    checksum += u64::from(batch.inputs[0]) + u64::from(batch.targets[0]);
                    sampler
                        .batch_into(&mut inputs, &mut targets, i)
                        .expect("batch_into");
                    checksum += u64::from(inputs[1]);
                }
            }
        });
        assert_eq!(count, 0, "{} sampler allocated", kind.name());
        std::hint::black_box(checksum);
    }
}
