"""The model catalog: which models a deployment serves, with their engines and prices."""
