//! Integration scenarios for rkdump. The tests live in `tests/`; the helpers they share (the
//! reference tools) are the lab's, re-exported here.

pub use rkdump_lab::reference::*;
