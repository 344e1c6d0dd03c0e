"""The demo: embedded services, the worker and live traffic on screen."""
