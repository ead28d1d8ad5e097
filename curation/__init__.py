"""videor4.curation"""
