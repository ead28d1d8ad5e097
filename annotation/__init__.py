"""videor4.annotation"""
