"""detect.proposals"""
