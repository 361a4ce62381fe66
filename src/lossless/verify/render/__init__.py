"""Rendering of an analysis: text and JSON (text), HTML (html_figure, html_page)."""
