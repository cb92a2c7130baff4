//! Kernel BTF (`kernel::btf::from_bytes`, the daemon's own reader of
//! /sys/kernel/btf/vmlinux): never panics on a malformed file; what it
//! finds points inside the types it was given; the placeholder BTF handed
//! to aya for fentry is no larger than the file's own type count allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oomwatch::kernel::btf::{aya_btf_for_functions, from_bytes};
use oomwatch::kernel::btf_reader::Btf;

/// The seed is a 1.4 KiB subset of a kernel's BTF; the real file is 5 MiB.
const MAX_INPUT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_INPUT {
        return;
    }
    let types = Btf::parse(data.to_vec()).map(|b| b.len());
    let functions = ["psi_memstall_enter", "psi_memstall_leave"];
    match from_bytes(data.to_vec(), &functions) {
        Ok(info) => {
            let count = types.expect("the reader accepted what the finder read");
            for (name, id) in &info.function_ids {
                assert!(functions.contains(&name.as_str()));
                assert!(*id >= 1 && *id as usize <= count, "{name} id {id} of {count} types");
            }
            if !info.function_ids.is_empty() {
                aya_btf_for_functions(&info.function_ids).expect("aya parses the placeholder");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
