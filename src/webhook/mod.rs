//! Webhook intake: signature check, the delivery inbox, interpretation into intents,
//! and recovery of missed deliveries.

pub mod event;
pub mod inbox;
pub mod interpret;
pub mod redelivery;
pub mod signature;
pub mod writer;
