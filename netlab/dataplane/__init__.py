"""netlab.dataplane"""
