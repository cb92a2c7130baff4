//! oomwatch kernel programs. One file per probe family (`oom`, `oom_control`,
//! `exit`, `reclaim`, `memstall`, and `usage`, the sampler's usage walk), over three shared pieces: `maps` (the maps
//! and globals), `kptr` (kernel pointers as types, read through BTF
//! offsets) and `ledger` (the per-thread stall ledger of reclaim and
//! memstall). Configuration comes in through globals set by the loader
//! (tracepoint field offsets from tracefs format files, struct offsets from
//! BTF, stall settings) and the `SETTINGS` map (what is only known after
//! attaching). A read that fails is counted per program (`errors`), never
//! dropped silently.
#![no_std]
#![no_main]

/// Ties an item's symbol (the static's or function's own name, which is
/// what the loader finds it by) to the shared constant in
/// `oomwatch_common::names`: `symbol!(EVENTS = map::EVENTS)` does not build
/// when the two differ or the item is gone.
macro_rules! symbol {
    ($item:ident = $name:expr) => {
        const _: () = {
            #[allow(dead_code)]
            fn exists() {
                let _ = &$item;
            }
            assert!(
                oomwatch_common::names::same(stringify!($item), $name),
                concat!(stringify!($item), " is not named as in oomwatch_common::names")
            );
        };
    };
}

mod errors;
mod exit;
mod kptr;
mod ledger;
mod maps;
mod memstall;
mod oom;
mod oom_control;
mod reclaim;
mod usage;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// SAFETY: the section the kernel reads the license from; nothing else is
// placed there, and the symbol name is unique in the object.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
