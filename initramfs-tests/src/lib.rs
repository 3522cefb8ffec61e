//! Integration scenarios for rkdump. The tests live in `tests/`; what they share is here:
//! [`synthetic`] builds small vmcores with exactly the kernel state a test needs, and the lab's
//! reference tools (makedumpfile, crash, drgn) are re-exported.

pub mod synthetic;

pub use rkdump_lab::reference::*;
