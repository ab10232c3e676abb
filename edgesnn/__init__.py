"""edgesnn: spiking neural networks in real time at the edge."""
__version__ = "0.1.0"
