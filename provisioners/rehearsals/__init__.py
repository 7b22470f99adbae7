"""Stand-ins that let a cloud's real code path run here: the stage (the cloud's API and its
instances as containers of the run), moto for AWS, the VPC stand-in for IBM.
"""
