"""The performance appendix: settings and dry run of its notebook."""
