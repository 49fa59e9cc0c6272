"""autoloss_tf: learned training schedules for Keras (AutoLoss)."""

__version__ = "0.1.0"

from autoloss_tf.actions import Action
from autoloss_tf.controllers import Controller
from autoloss_tf.controllers import LinearController
from autoloss_tf.controllers import MLPController
from autoloss_tf.controllers import make_controller
from autoloss_tf.export import ControllerLoadError
from autoloss_tf.export import ControllerMismatchError
from autoloss_tf.export import ExportedController
from autoloss_tf.export import check_controller_for_model
from autoloss_tf.export import export_controller
from autoloss_tf.export import load_controller
from autoloss_tf.export import load_schedule
from autoloss_tf.features import FeatureTracker
from autoloss_tf.features import feature_names
from autoloss_tf.ppo import PPOUpdater
from autoloss_tf.ppo import ValueNetwork
from autoloss_tf.scheduled_model import ScheduledModel
from autoloss_tf.schedules import CyclicSchedule
from autoloss_tf.schedules import FixedSchedule
from autoloss_tf.schedules import LearnedSchedule
from autoloss_tf.schedules import MemberwiseSchedule
from autoloss_tf.schedules import RandomSchedule
from autoloss_tf.schedules import Schedule
from autoloss_tf.schedules import ThresholdSchedule
