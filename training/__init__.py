"""videor4.training"""
