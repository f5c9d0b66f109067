//! Webhook intake: signature check, the delivery inbox, interpretation into intents,
//! recovery of missed deliveries and payload retention.

pub mod event;
pub mod inbox;
pub mod interpret;
pub mod redelivery;
pub mod retention;
pub mod signature;
pub mod writer;
