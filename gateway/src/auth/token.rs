//! Token verification and signing (SPEC §6 "Auth at the edge").
