//! What the server-rendered pages share.

pub mod layout;
