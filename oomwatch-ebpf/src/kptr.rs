//! Kernel pointers as types, with the reads each supports as methods: a
//! [`Task`] is a `struct task_struct *`, a [`Css`] a `struct
//! cgroup_subsys_state *`, a [`Cgroup`] a `struct cgroup *`, a [`Memcg`] a `struct mem_cgroup *`, an
//! [`OomControl`] a `struct oom_control *`. Offsets come from BTF at load
//! (`KERNEL_OFFSETS`, `MEMCG_OFFSETS`, `OOM_CONTROL_OFFSETS`); without them a read is
//! [`Absent::Unknown`]. Every read goes through bpf_probe_read_kernel, which
//! returns an error for a bad address instead of faulting: a wrong offset
//! costs a failed read ([`Absent::Failed`], counted by the caller), never
//! the kernel.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::{bpf_get_current_task, generated};
use oomwatch_common::{COMM_LEN, offsets::OFFSET_ABSENT};

use crate::{
    errors::{Absent, Read},
    maps::{KERNEL_OFFSETS, MEMCG_OFFSETS, OOM_CONTROL_OFFSETS, global},
};

/// Plain data whose all-zero bytes are a value: what the programs read
/// from the kernel.
pub trait Plain: Copy {}
impl Plain for u8 {}
impl Plain for u16 {}
impl Plain for u32 {}
impl Plain for u64 {}
impl Plain for i8 {}
impl Plain for i16 {}
impl Plain for i32 {}
impl Plain for i64 {}
impl Plain for [u8; COMM_LEN] {}

/// The `T` at a kernel address, through bpf_probe_read_kernel.
///
/// Unlike aya's wrapper, the destination starts zeroed: on a failed read
/// the value is zero, not uninitialised. The compiler may move a value it
/// considers dead on the error path anyway (an `Option`'s payload), and
/// the verifier refuses any read of an uninitialised register.
#[inline(always)]
pub fn probe_read<T: Plain>(src: *const T) -> Read<T> {
    let mut v = MaybeUninit::<T>::zeroed();
    // SAFETY: the helper copies size_of::<T>() bytes from a kernel address
    // into our stack buffer of that size, and fails cleanly (an error, no
    // fault) when the address is not mapped; `src` is never dereferenced.
    let ret = unsafe { generated::bpf_probe_read_kernel(v.as_mut_ptr().cast(), size_of::<T>() as u32, src.cast()) };
    // SAFETY: zeroed is a valid `T` (Plain), and on success the kernel
    // wrote size_of::<T>() bytes of a `T`.
    let v = unsafe { v.assume_init() };
    if ret == 0 { Ok(v) } else { Err(Absent::Failed) }
}

/// The `T` at `base + offset`.
#[inline(always)]
fn read_at<T: Plain>(base: u64, offset: u32) -> Read<T> {
    if offset == OFFSET_ABSENT {
        return Err(Absent::Unknown);
    }
    probe_read(base.wrapping_add(offset as u64) as *const T)
}

/// A pointer member the kernel always sets: NULL is a failed read.
#[inline(always)]
fn read_ptr(base: u64, offset: u32) -> Read<u64> {
    match read_at::<u64>(base, offset)? {
        0 => Err(Absent::Failed),
        p => Ok(p),
    }
}

/// The task walk's offsets are there (BTF was readable at load).
#[inline(always)]
pub fn offsets_known() -> bool {
    global(&KERNEL_OFFSETS.valid) != 0
}

#[inline(always)]
fn known() -> Read<()> {
    if offsets_known() { Ok(()) } else { Err(Absent::Unknown) }
}

/// `struct task_struct *`.
#[derive(Clone, Copy)]
pub struct Task(u64);

impl Task {
    /// The task running this program.
    #[inline(always)]
    pub fn current() -> Self {
        // SAFETY: the helper takes no arguments and returns the running
        // task's address, which is only ever read through bpf_probe_read_kernel.
        Self(unsafe { bpf_get_current_task() })
    }

    /// A task pointer a hook handed over; NULL is no task.
    #[inline(always)]
    pub fn from_ptr(ptr: u64) -> Read<Self> {
        if ptr == 0 { Err(Absent::Failed) } else { Ok(Self(ptr)) }
    }

    #[inline(always)]
    pub fn pid(self) -> Read<u32> {
        known()?;
        read_at::<i32>(self.0, global(&KERNEL_OFFSETS.task_pid)).map(|p| p as u32)
    }

    #[inline(always)]
    pub fn tgid(self) -> Read<u32> {
        known()?;
        read_at::<i32>(self.0, global(&KERNEL_OFFSETS.task_tgid)).map(|p| p as u32)
    }

    #[inline(always)]
    pub fn comm(self) -> Read<[u8; COMM_LEN]> {
        known()?;
        read_at(self.0, global(&KERNEL_OFFSETS.task_comm))
    }

    /// `task->cgroups`.
    #[inline(always)]
    fn css_set(self) -> Read<u64> {
        known()?;
        read_ptr(self.0, global(&KERNEL_OFFSETS.task_cgroups))
    }

    /// `task->cgroups->subsys[memory_cgrp_id]`: the task's memory css.
    #[inline(always)]
    pub fn memory_css(self) -> Read<Css> {
        let css_set = self.css_set()?;
        let subsys = global(&KERNEL_OFFSETS.css_set_subsys) + 8 * global(&KERNEL_OFFSETS.memory_cgrp_id);
        read_ptr(css_set, subsys).map(Css)
    }

    /// The inode id of the task's memory cgroup, on v1 and v2 alike.
    #[inline(always)]
    pub fn memcg_id(self) -> Read<u64> {
        self.memory_css()?.cgroup_id()
    }

    /// `task->cgroups->dfl_cgrp->kn->id`: the task's cgroup on the v2 hierarchy.
    #[inline(always)]
    pub fn dfl_cgroup_id(self) -> Read<u64> {
        let css_set = self.css_set()?;
        Cgroup(read_ptr(css_set, global(&KERNEL_OFFSETS.css_set_dfl_cgrp))?).id()
    }
}

/// `struct cgroup_subsys_state *`.
#[derive(Clone, Copy)]
pub struct Css(u64);

impl Css {
    /// `css->cgroup->kn->id`: the inode id of the css's cgroup.
    #[inline(always)]
    pub fn cgroup_id(self) -> Read<u64> {
        known()?;
        Cgroup(read_ptr(self.0, global(&KERNEL_OFFSETS.css_cgroup))?).id()
    }

    /// `css->parent`; `None` at the root.
    #[inline(always)]
    pub fn parent(self) -> Read<Option<Css>> {
        memcg_known()?;
        let parent: u64 = read_at(self.0, global(&MEMCG_OFFSETS.css_parent))?;
        Ok((parent != 0).then_some(Css(parent)))
    }

    /// The memory cgroup this css is embedded in (for the memory controller's
    /// css only).
    #[inline(always)]
    pub fn memcg(self) -> Read<Memcg> {
        memcg_known()?;
        Ok(Memcg(self.0.wrapping_sub(global(&MEMCG_OFFSETS.memcg_css) as u64)))
    }
}

/// The memory cgroup walk's offsets are there.
#[inline(always)]
fn memcg_known() -> Read<()> {
    if global(&MEMCG_OFFSETS.valid) != 0 { Ok(()) } else { Err(Absent::Unknown) }
}

/// `struct cgroup *`.
#[derive(Clone, Copy)]
pub struct Cgroup(u64);

impl Cgroup {
    /// A cgroup pointer a hook handed over; NULL is no cgroup.
    #[inline(always)]
    pub fn from_ptr(ptr: u64) -> Read<Self> {
        if ptr == 0 { Err(Absent::Failed) } else { Ok(Self(ptr)) }
    }

    /// `cgrp->kn->id`.
    #[inline(always)]
    pub fn id(self) -> Read<u64> {
        known()?;
        let kn = read_ptr(self.0, global(&KERNEL_OFFSETS.cgroup_kn))?;
        read_at(kn, global(&KERNEL_OFFSETS.kernfs_node_id))
    }

    /// `cgrp->subsys[memory_cgrp_id]`: the cgroup's own memory css; `None`
    /// where the memory controller is not enabled (a v2 cgroup whose parent
    /// does not delegate it, any cgroup of a v1 hierarchy without it).
    #[inline(always)]
    pub fn memory_css(self) -> Read<Option<Css>> {
        known()?;
        let subsys = global(&KERNEL_OFFSETS.cgroup_subsys);
        if subsys == OFFSET_ABSENT {
            return Err(Absent::Unknown);
        }
        let subsys = subsys + 8 * global(&KERNEL_OFFSETS.memory_cgrp_id);
        let css: u64 = read_at(self.0, subsys)?;
        Ok((css != 0).then_some(Css(css)))
    }
}

/// `struct mem_cgroup *`.
#[derive(Clone, Copy)]
pub struct Memcg(u64);

impl Memcg {
    /// `&memcg->css`.
    #[inline(always)]
    pub fn css(self) -> Read<Css> {
        memcg_known()?;
        Ok(Css(self.0.wrapping_add(global(&MEMCG_OFFSETS.memcg_css) as u64)))
    }

    /// `memcg->memory.usage`: pages charged now.
    #[inline(always)]
    pub fn usage_pages(self) -> Read<u64> {
        memcg_known()?;
        // atomic_long_t: signed, and briefly negative in theory; never
        // below zero on the way out.
        read_at::<i64>(self.0, global(&MEMCG_OFFSETS.memory_usage)).map(|v| v.max(0) as u64)
    }

    /// `memcg->memory.max`: the hard limit in pages.
    #[inline(always)]
    pub fn max_pages(self) -> Read<u64> {
        memcg_known()?;
        read_at(self.0, global(&MEMCG_OFFSETS.memory_max))
    }

    /// `memcg->memory.failcnt`; `None` where this counter does not keep it
    /// (`track_failcnt` false: v2 memcgs on newer kernels).
    #[inline(always)]
    pub fn failcnt(self) -> Read<Option<u64>> {
        memcg_known()?;
        let tracked = match read_at::<u8>(self.0, global(&MEMCG_OFFSETS.memory_track_failcnt)) {
            Ok(flag) => flag != 0,
            // Kernels without the flag keep failcnt in every counter.
            Err(Absent::Unknown) => true,
            Err(e) => return Err(e),
        };
        if !tracked {
            return Ok(None);
        }
        read_at(self.0, global(&MEMCG_OFFSETS.memory_failcnt)).map(Some)
    }

    /// `memcg->memory_events_local[MEMCG_OOM]`: OOMs at this memcg's limit.
    #[inline(always)]
    pub fn oom_events(self) -> Read<u64> {
        memcg_known()?;
        read_at(self.0, global(&MEMCG_OFFSETS.oom_events_local))
    }
}

/// `struct oom_control *`, as `oom_kill_process` gets it. Fields this
/// kernel lacks read as [`Absent::Unknown`].
#[derive(Clone, Copy)]
pub struct OomControl(u64);

impl OomControl {
    #[inline(always)]
    pub fn from_ptr(ptr: u64) -> Read<Self> {
        if global(&OOM_CONTROL_OFFSETS.valid) == 0 {
            return Err(Absent::Unknown);
        }
        if ptr == 0 { Err(Absent::Failed) } else { Ok(Self(ptr)) }
    }

    #[inline(always)]
    fn field<T: Plain>(self, offset: &u32) -> Read<T> {
        read_at(self.0, global(offset))
    }

    /// `oc->memcg`: the memory cgroup whose limit was hit; `None` for a
    /// global OOM.
    #[inline(always)]
    pub fn memcg(self) -> Read<Option<Memcg>> {
        let ptr: u64 = self.field(&OOM_CONTROL_OFFSETS.memcg)?;
        Ok((ptr != 0).then_some(Memcg(ptr)))
    }

    /// `oc->chosen`: the victim; `None` when none was chosen yet.
    #[inline(always)]
    pub fn chosen(self) -> Read<Option<Task>> {
        let ptr: u64 = self.field(&OOM_CONTROL_OFFSETS.chosen)?;
        Ok((ptr != 0).then_some(Task(ptr)))
    }

    #[inline(always)]
    pub fn totalpages(self) -> Read<u64> {
        self.field(&OOM_CONTROL_OFFSETS.totalpages)
    }

    #[inline(always)]
    pub fn chosen_points(self) -> Read<i64> {
        self.field(&OOM_CONTROL_OFFSETS.chosen_points)
    }

    #[inline(always)]
    pub fn gfp_mask(self) -> Read<u32> {
        self.field(&OOM_CONTROL_OFFSETS.gfp_mask)
    }

    #[inline(always)]
    pub fn order(self) -> Read<i32> {
        self.field(&OOM_CONTROL_OFFSETS.order)
    }

    #[inline(always)]
    pub fn constraint(self) -> Read<u32> {
        self.field(&OOM_CONTROL_OFFSETS.constraint)
    }
}
