#![no_std]
// Exists so that `oomwatch` can name this crate as a build-dependency (cargo
// then rebuilds the user crate when the kernel programs change).
