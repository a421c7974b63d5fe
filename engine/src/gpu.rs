//! The device, its context, streams and kernel modules, set up once per [`Gpu`].
//!
//! A module is loaded (and its PTX compiled by the driver) on the first use
//! of one of its kernels, once per [`Gpu`]: the embedded PTX is ~9.5 MB and
//! a process needs only part of it (the trainer: the `train` module), so
//! the driver's first, uncached compilation is paid only for what runs
//! (measured on the H100: 36 s for everything on a fresh machine).

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cust::context::{Context, CurrentContext};
use cust::device::Device;
use cust::module::Module;
use cust::stream::{Stream, StreamFlags};
use cust::sys;
use cust::CudaFlags;

use crate::error::{check, Context as _, Error};
use crate::ptx;

/// Every kernel runs blocks of this many threads (ptx/src/common.cuh).
pub(crate) const BLOCK: u32 = 256;

/// What the planner needs to know about the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Streaming multiprocessors.
    pub sm_count: usize,
    /// Largest dynamic shared memory one block may opt into, bytes.
    pub max_smem_per_block: usize,
    /// Whether cooperative launches (grid-wide barriers) are supported.
    pub cooperative: bool,
    /// Largest thread-block cluster the engine's cluster kernels may be
    /// launched with: 16 on sm_90 and later (a kernel whose non-portable
    /// size the driver refuses reports no resident clusters of 16, so the
    /// planner takes 8), 0 on older GPUs (the cluster modules are not loaded).
    pub cluster: usize,
}

/// `CUlaunchConfig` of the CUDA 12 driver API (cust_raw 0.11.3 predates it).
#[repr(C)]
struct LaunchConfig {
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem_bytes: u32,
    stream: sys::CUstream,
    attrs: *mut c_void,
    num_attrs: u32,
}

/// `CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED` (CUDA 12 cuda.h).
const NON_PORTABLE_CLUSTER_SIZE_ALLOWED: i32 = 14;

// Driver entry points newer than cust_raw's bindings (recur's no-device stub
// exports them too). Results as raw codes: a Rust enum must not receive a
// value it does not list.
extern "C" {
    fn cuOccupancyMaxActiveClusters(
        num_clusters: *mut i32,
        func: sys::CUfunction,
        config: *const LaunchConfig,
    ) -> u32;
    #[link_name = "cuFuncSetAttribute"]
    fn cu_func_set_attribute_raw(func: sys::CUfunction, attrib: i32, value: i32) -> u32;
}

#[derive(Clone, Copy)]
pub(crate) struct Kernel {
    pub(crate) func: sys::CUfunction,
    /// Static shared memory of the kernel, bytes.
    pub(crate) static_smem: usize,
    /// Largest cluster it may be launched with: 16 unless the driver
    /// refused the non-portable size for a `*cluster16*` kernel (then 8).
    pub(crate) max_cluster: usize,
}

/// Which of a [`Gpu`]'s two streams work is queued on. Everything runs on
/// `Main` unless a caller forks independent work onto `Side` (the trainer's
/// weight gradients beside its time loop) and joins it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Main,
    Side,
}

/// A driver event that orders one stream after another (no timing; cust's
/// `Event` does not expose its handle for `cuStreamWaitEvent` without
/// giving the event up). Drop it before the context (a field before the
/// owner's `Gpu`).
pub(crate) struct StreamEvent(sys::CUevent);

// SAFETY: as for `GpuInner`: the driver API is thread-safe and an event may
// be used from any thread where its context is current.
unsafe impl Send for StreamEvent {}

impl Drop for StreamEvent {
    fn drop(&mut self) {
        // SAFETY: created by `Gpu::event`, destroyed once; an error here
        // (a context already gone) leaves nothing to free.
        unsafe {
            sys::cuEventDestroy_v2(self.0);
        }
    }
}

/// A loaded module and its kernels.
struct LoadedModule {
    kernels: HashMap<&'static str, Kernel>,
    _module: Module,
}

/// A GPU ready for work: context, stream and every kernel loaded. Cheap to
/// clone (shared); device memory made through it keeps it alive.
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

pub(crate) struct GpuInner {
    pub(crate) stream: Stream,
    /// The second stream ([`Lane::Side`]), ordered with `stream` only
    /// through [`Gpu::fork`] and [`Gpu::join`].
    side: Stream,
    /// Kernel name → index in [`ptx::MODULES`] (modules this device loads).
    module_of: HashMap<&'static str, usize>,
    /// `ptx::MODULES[i]`, loaded on the first use of one of its kernels.
    loaded: Mutex<Vec<Option<LoadedModule>>>,
    pub(crate) limits: DeviceLimits,
    pub(crate) name: String,
    // Last: dropped after everything above, which lives in the context.
    pub(crate) context: Context,
}

// SAFETY: the driver API is thread-safe; the raw handles (context, stream,
// modules, functions) may be used from any thread once the context is
// current there, which every engine call ensures first (`Gpu::bind`).
unsafe impl Send for GpuInner {}
unsafe impl Sync for GpuInner {}

impl Gpu {
    /// Initialises the driver and opens device 0; kernel modules load on
    /// first use. [`Error::NoDevice`] where there is no driver (recur's stub) or
    /// no device.
    pub fn new() -> Result<Gpu, Error> {
        cust::init(CudaFlags::empty()).doing("initialising the CUDA driver")?;
        let device = Device::get_device(0).doing("opening device 0")?;
        let name = device.name().doing("reading the device name")?;
        let context = Context::new(device).doing("creating the context")?;
        // Blocking streams: the driver's synchronous copies (on the legacy
        // default stream) are ordered with the work queued on both. The side
        // stream at the lowest priority: where both have blocks waiting, the
        // SMs go to the main stream's (the time loops on the critical path)
        // first.
        let priorities =
            CurrentContext::get_stream_priority_range().doing("reading the stream priorities")?;
        let stream = Stream::new(StreamFlags::DEFAULT, Some(priorities.greatest))
            .doing("creating the stream")?;
        let side = Stream::new(StreamFlags::DEFAULT, Some(priorities.least))
            .doing("creating the side stream")?;
        let attr = |a: sys::CUdevice_attribute, what: &'static str| -> Result<usize, Error> {
            let mut v = 0i32;
            // SAFETY: plain query into a local.
            let r = unsafe { sys::cuDeviceGetAttribute(&mut v, a, device.as_raw()) };
            check(r, what, None, String::new)?;
            Ok(v.max(0) as usize)
        };
        use sys::CUdevice_attribute as A;
        let major = attr(
            A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
            "reading the compute capability",
        )?;
        let limits = DeviceLimits {
            sm_count: attr(
                A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                "reading the SM count",
            )?,
            max_smem_per_block: attr(
                A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                "reading the shared memory limit",
            )?,
            cooperative: attr(
                A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH,
                "reading cooperative launch support",
            )? != 0,
            cluster: if major >= 9 { 16 } else { 0 },
        };
        let mut module_of = HashMap::new();
        for (index, m) in ptx::MODULES.iter().enumerate() {
            if (m.min_major as usize) > major {
                continue; // e.g. compute_90 PTX on an sm_80 GPU
            }
            for entry in ptx::entry_names(m.text) {
                module_of.insert(entry, index);
            }
        }
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                stream,
                side,
                module_of,
                loaded: Mutex::new((0..ptx::MODULES.len()).map(|_| None).collect()),
                limits,
                name,
                context,
            }),
        })
    }

    /// The device's name, e.g. `"NVIDIA H100 80GB HBM3"`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The device's limits as the planner sees them.
    pub fn limits(&self) -> DeviceLimits {
        self.inner.limits
    }

    /// The device memory free and in total, in bytes (the driver's
    /// `cuMemGetInfo`; other processes' use counts against free).
    pub fn memory(&self) -> Result<(usize, usize), Error> {
        self.bind()?;
        cust::memory::mem_get_info().doing("reading the device's free memory")
    }

    /// Makes this GPU's context current on the calling thread (every engine
    /// call does it, so a `Gpu` may move between threads).
    pub(crate) fn bind(&self) -> Result<(), Error> {
        CurrentContext::set_current(&self.inner.context).doing("binding the context")
    }

    /// Waits until all work queued on both streams is done.
    pub fn synchronize(&self) -> Result<(), Error> {
        self.bind()?;
        self.inner
            .side
            .synchronize()
            .doing("waiting for the GPU (side stream)")?;
        self.inner.stream.synchronize().doing("waiting for the GPU")
    }

    /// The raw handle of a lane's stream.
    pub(crate) fn stream(&self, lane: Lane) -> sys::CUstream {
        match lane {
            Lane::Main => self.inner.stream.as_inner(),
            Lane::Side => self.inner.side.as_inner(),
        }
    }

    /// An event for [`Gpu::fork`] / [`Gpu::join`].
    pub(crate) fn event(&self) -> Result<StreamEvent, Error> {
        self.event_with(sys::CUevent_flags_enum::CU_EVENT_DISABLE_TIMING as u32)
    }

    /// An event that keeps the GPU's time stamp, for [`Gpu::elapsed_us`].
    pub(crate) fn timing_event(&self) -> Result<StreamEvent, Error> {
        self.event_with(sys::CUevent_flags_enum::CU_EVENT_DEFAULT as u32)
    }

    fn event_with(&self, flags: u32) -> Result<StreamEvent, Error> {
        self.bind()?;
        let mut ev = std::ptr::null_mut();
        // SAFETY: creates an event into a local (the context is current).
        let r = unsafe { sys::cuEventCreate(&mut ev, flags) };
        check(r, "creating an event", None, String::new)?;
        Ok(StreamEvent(ev))
    }

    /// GPU time (µs) from timing event `from` to `to`, both recorded and
    /// completed (after a synchronize).
    pub(crate) fn elapsed_us(&self, from: &StreamEvent, to: &StreamEvent) -> Result<f64, Error> {
        let mut ms = 0.0f32;
        // SAFETY: live events of this context, written into a local.
        let r = unsafe { sys::cuEventElapsedTime(&mut ms, from.0, to.0) };
        check(r, "reading the time between two events", None, String::new)?;
        Ok(f64::from(ms) * 1e3)
    }

    /// Work queued on the side stream from now on starts after everything
    /// queued on the main stream so far (`ev` is recorded there).
    pub(crate) fn fork(&self, ev: &StreamEvent) -> Result<(), Error> {
        self.record(ev, Lane::Main)?;
        self.wait(Lane::Side, ev)
    }

    /// Work queued on the main stream from now on starts after everything
    /// queued on the side stream so far (`ev` is recorded there).
    pub(crate) fn join(&self, ev: &StreamEvent) -> Result<(), Error> {
        self.record(ev, Lane::Side)?;
        self.wait(Lane::Main, ev)
    }

    /// Records `ev` on `lane`: it completes with the work queued there so far.
    pub(crate) fn record(&self, ev: &StreamEvent, lane: Lane) -> Result<(), Error> {
        // SAFETY: live event and stream of this context.
        let r = unsafe { sys::cuEventRecord(ev.0, self.stream(lane)) };
        check(r, "recording an event", None, || format!("{lane:?} stream"))
    }

    /// Work queued on `lane` from now on starts after `ev`'s last record.
    pub(crate) fn wait(&self, lane: Lane, ev: &StreamEvent) -> Result<(), Error> {
        // SAFETY: live event and stream of this context; the wait refers to
        // the record queued last (a later record does not change it).
        let r = unsafe { sys::cuStreamWaitEvent(self.stream(lane), ev.0, 0) };
        check(r, "ordering the streams", None, || {
            format!("{lane:?} stream waiting")
        })
    }

    /// The kernel `name`, loading its module first if no kernel of it has
    /// run on this GPU yet.
    pub(crate) fn kernel(&self, name: &'static str) -> Result<Kernel, Error> {
        let absent = || Error::Mismatch {
            what: "kernel in the embedded PTX",
            expected: name.to_owned(),
            actual: "absent".to_owned(),
        };
        let &index = self.inner.module_of.get(name).ok_or_else(absent)?;
        // A panic elsewhere while holding the lock leaves the table valid.
        let mut loaded = self.inner.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded[index].is_none() {
            self.bind()?;
            loaded[index] = Some(load_module(&ptx::MODULES[index], &self.inner.limits)?);
        }
        loaded[index]
            .as_ref()
            .and_then(|m| m.kernels.get(name).copied())
            .ok_or_else(absent)
    }

    /// How many blocks of `kernel` fit on one SM with `smem` bytes of
    /// dynamic shared memory.
    pub(crate) fn blocks_per_sm(&self, name: &'static str, smem: usize) -> Result<usize, Error> {
        let k = self.kernel(name)?;
        if smem + k.static_smem > self.inner.limits.max_smem_per_block {
            return Ok(0);
        }
        let mut n = 0i32;
        // SAFETY: occupancy query into a local.
        let r = unsafe {
            sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut n, k.func, BLOCK as i32, smem)
        };
        check(r, "querying occupancy", Some(name), || {
            format!("smem={smem}")
        })?;
        Ok(n.max(0) as usize)
    }

    /// How many clusters of `cluster` blocks of `kernel` (compiled with that
    /// cluster size) with `smem` bytes of dynamic shared memory can be
    /// resident on the device at once (0: none fits).
    pub(crate) fn max_active_clusters(
        &self,
        name: &'static str,
        cluster: usize,
        smem: usize,
    ) -> Result<usize, Error> {
        let k = self.kernel(name)?;
        if smem + k.static_smem > self.inner.limits.max_smem_per_block || cluster > k.max_cluster {
            return Ok(0);
        }
        let config = LaunchConfig {
            grid: [cluster as u32, 1, 1],
            block: [BLOCK, 1, 1],
            shared_mem_bytes: smem as u32,
            stream: self.inner.stream.as_inner(),
            attrs: std::ptr::null_mut(),
            num_attrs: 0,
        };
        let mut n = 0i32;
        // SAFETY: occupancy query into a local; the config lives across the call.
        let r = unsafe { cuOccupancyMaxActiveClusters(&mut n, k.func, &config) };
        if r != 0 {
            return Err(Error::driver(
                r,
                "querying cluster occupancy",
                Some(name),
                || format!("cluster={cluster} smem={smem}"),
            ));
        }
        Ok(n.max(0) as usize)
    }

    /// Queues `name` on the main stream; see [`Gpu::launch_on`].
    ///
    /// # Safety
    /// As [`Gpu::launch_on`].
    pub(crate) unsafe fn launch(
        &self,
        name: &'static str,
        grid: (u32, u32),
        smem: usize,
        cooperative: bool,
        params: &mut [*mut c_void],
        shape: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        self.launch_on(Lane::Main, name, grid, smem, cooperative, params, shape)
    }

    /// Queues `name` on `lane`'s stream: `grid` blocks of [`BLOCK`] threads,
    /// `smem` bytes of dynamic shared memory, `params` the addresses of the
    /// kernel's arguments in order. Cooperative launches guarantee that all
    /// blocks are resident at once (grid-wide barriers).
    ///
    /// # Safety
    /// `params` must match the kernel's parameter list in number, order and
    /// types, and every device pointer among them must be valid for the
    /// accesses the kernel makes with the other arguments.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn launch_on(
        &self,
        lane: Lane,
        name: &'static str,
        grid: (u32, u32),
        smem: usize,
        cooperative: bool,
        params: &mut [*mut c_void],
        shape: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        let k = self.kernel(name)?;
        let stream = self.stream(lane);
        let r = if cooperative {
            sys::cuLaunchCooperativeKernel(
                k.func,
                grid.0,
                grid.1,
                1,
                BLOCK,
                1,
                1,
                smem as u32,
                stream,
                params.as_mut_ptr(),
            )
        } else {
            sys::cuLaunchKernel(
                k.func,
                grid.0,
                grid.1,
                1,
                BLOCK,
                1,
                1,
                smem as u32,
                stream,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        check(r, "launching", Some(name), shape)
    }
}

impl Gpu {
    /// Microseconds one grid-wide barrier of the persistent kernels takes
    /// with `blocks` blocks (a diagnostic for the benchmarks): the time of
    /// `iters` barriers in one cooperative launch minus that of none, over
    /// `iters`.
    #[doc(hidden)]
    pub fn time_grid_barrier(&self, blocks: usize, iters: usize) -> Result<f64, Error> {
        self.time_barrier_kernel("barrier_bench", blocks, iters)
    }

    /// [`Gpu::time_grid_barrier`] for the one-word barrier the kernels do not
    /// use yet (`grid_sync_flip`, ptx/src/common.cuh), to compare the two.
    #[doc(hidden)]
    pub fn time_grid_barrier_flip(&self, blocks: usize, iters: usize) -> Result<f64, Error> {
        self.time_barrier_kernel("barrier_bench_flip", blocks, iters)
    }

    fn time_barrier_kernel(
        &self,
        kernel: &'static str,
        blocks: usize,
        iters: usize,
    ) -> Result<f64, Error> {
        self.bind()?;
        let mut bar = crate::mem::alloc::<u32>(crate::mem::BARRIER_WORDS, "barrier")?;
        crate::mem::fill32(self, &mut bar, 0)?;
        let run = |n: usize| -> Result<f64, Error> {
            let mut ptr = crate::mem::addr(&bar);
            let mut n_arg = n as i32;
            let mut args: [*mut c_void; 2] = [
                &mut ptr as *mut _ as *mut c_void,
                &mut n_arg as *mut _ as *mut c_void,
            ];
            self.synchronize()?;
            let start = std::time::Instant::now();
            // SAFETY: barrier_bench / barrier_bench_flip(unsigned* bar (64
            // words), int iters).
            unsafe {
                self.launch(kernel, (blocks as u32, 1), 0, true, &mut args, || {
                    format!("blocks={blocks}")
                })?
            };
            self.synchronize()?;
            Ok(start.elapsed().as_secs_f64() * 1e6)
        };
        run(iters)?; // warm-up
        let with = run(iters)?;
        let without = run(0)?;
        Ok((with - without) / iters.max(1) as f64)
    }
}

/// Loads `m` (the driver compiles its PTX, or takes it from its cache) and
/// prepares every kernel in it: all the shared memory a block can have, and
/// the non-portable cluster size for the `*cluster16*` kernels.
fn load_module(m: &ptx::PtxModule, limits: &DeviceLimits) -> Result<LoadedModule, Error> {
    let module = Module::from_ptx(m.text, &[])
        .map_err(|e| Error::driver(e as u32, "loading a PTX module", Some(m.name), String::new))?;
    let mut kernels = HashMap::new();
    for entry in ptx::entry_names(m.text) {
        let func = module
            .get_function(entry)
            .map_err(|e| Error::driver(e as u32, "finding a kernel", None, || entry.to_owned()))?
            .to_raw();
        let static_smem = func_attr(
            func,
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
        )?;
        let dynamic = limits.max_smem_per_block.saturating_sub(static_smem);
        // SAFETY: setting an attribute of a function of a loaded module.
        let r = unsafe {
            sys::cuFuncSetAttribute(
                func,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dynamic as i32,
            )
        };
        check(r, "raising the shared memory limit", None, || {
            entry.to_owned()
        })?;
        let mut max_cluster = 16;
        if entry.contains("cluster16") {
            // SAFETY: setting an attribute of a function of a loaded module.
            let r =
                unsafe { cu_func_set_attribute_raw(func, NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1) };
            if r != 0 {
                max_cluster = 8; // the planner then takes the clusters of 8
            }
        }
        kernels.insert(
            entry,
            Kernel {
                func,
                static_smem,
                max_cluster,
            },
        );
    }
    Ok(LoadedModule {
        kernels,
        _module: module,
    })
}

fn func_attr(func: sys::CUfunction, a: sys::CUfunction_attribute) -> Result<usize, Error> {
    let mut v = 0i32;
    // SAFETY: attribute query of a loaded function into a local.
    let r = unsafe { sys::cuFuncGetAttribute(&mut v, a, func) };
    check(r, "reading a kernel attribute", None, String::new)?;
    Ok(v.max(0) as usize)
}
