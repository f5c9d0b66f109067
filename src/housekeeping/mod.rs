//! Keeping the hot tables small and cheap to scan.

pub mod retention;
pub mod unanswered;
pub mod vacuum;
