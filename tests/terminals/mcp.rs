//! The terminal MCP tools from the official Python SDK.
