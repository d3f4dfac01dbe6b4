"""The Lark grammar of the .net language (netdsl.lark), shipped as package data."""
