"""detect.training"""
