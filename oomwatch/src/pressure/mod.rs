//! PSI (pressure stall information): files and triggers.

pub mod psi;
pub mod trigger;
pub mod triggers;

#[cfg(test)]
mod privileged_tests;

pub use psi::{
    LineKind, Pressure, PressureError, PressurePoller, PsiLine, PsiParseError, parse_pressure,
    read_pressure,
};
pub use trigger::{
    PsiTrigger, SpecError, StallKind, TriggerError, TriggerFired, TriggerSpec, trigger_supported,
};
