//! Webhook intake: signature check, the delivery inbox, and interpretation into intents.

pub mod event;
pub mod inbox;
pub mod interpret;
pub mod signature;
