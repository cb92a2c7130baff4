//! oomwatch kernel programs. One file per probe family; configuration comes
//! in through globals set by the loader (tracepoint field offsets from tracefs
//! format files, struct offsets from BTF, stall settings) and the `SETTINGS`
//! map (what is only known after attaching).
#![no_std]
#![no_main]

mod exit;
mod maps;
mod memstall;
mod oom;
mod oom_control;
mod reclaim;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
