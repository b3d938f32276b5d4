"""Verbatim copies of reference implementations that the statistics tests compare against."""
